package market

import (
	"cmp"
	"encoding/hex"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Account is one identity's standing in a ledger.
type Account struct {
	Peer peer.ID `json:"peer"`
	// Earned is what the identity's nodes were paid for serving; Spent is
	// what its deployments paid.
	Earned Micro `json:"earned_micro"`
	Spent  Micro `json:"spent_micro"`
	// Served is the GPU time it served to other identities (its
	// contribution); Consumed the GPU time others served to it. Serving
	// oneself counts in Earned and Spent (they cancel) but not here, so it
	// buys no fair-share weight.
	Served   GPUTime `json:"served_gpu_time"`
	Consumed GPUTime `json:"consumed_gpu_time"`
}

// Balance is Earned minus Spent.
func (a Account) Balance() Micro { return a.Earned - a.Spent }

// Tally is what a set of receipts adds up to.
type Tally struct {
	// Accounts holds every identity that served or consumed, by peer ID.
	Accounts []Account
	// Accepted is the number of receipts counted.
	Accepted int
	// Rejected lists the held receipts not counted, in canonical order:
	// overlapping an earlier receipt for the same replica and GPU, or
	// billing more than the serving node's GPUs.
	Rejected []Rejection
}

// Account returns id's account, zero if it has none.
func (t *Tally) Account(id peer.ID) Account {
	i, ok := slices.BinarySearchFunc(t.Accounts, id, func(a Account, id peer.ID) int { return cmp.Compare(a.Peer, id) })
	if !ok {
		return Account{Peer: id}
	}
	return t.Accounts[i]
}

// Tally adds up the held receipts. Receipts are taken in canonical order
// (serving peer, then sequence number: a node's earlier receipt wins over a
// later one that contradicts it); one is counted unless it overlaps an
// already counted receipt of the same replica on one of the same GPUs, or
// would make some GPU of its node carry more than 1000 milli at some
// instant, or the node more than caps.DeclaredGPUs × 1000. The result is a
// pure function of the receipt set and caps.
func (l *Ledger) Tally(caps Capacities) *Tally {
	es := l.sorted()
	t := &Tally{}
	accts := map[peer.ID]*Account{}
	acct := func(id peer.ID) *Account {
		a, ok := accts[id]
		if !ok {
			a = &Account{Peer: id}
			accts[id] = a
		}
		return a
	}
	span := l.cfg.MaxSpan.Milliseconds()
	var (
		replicas = map[replicaGPU]*loadSet{}
		gpus     = map[serverGPU]*loadSet{}
		nodes    = map[peer.ID]*loadSet{}
		scratch  []event
	)
	for _, e := range es {
		r := &e.r
		s, en, milli := r.Start.UnixMilli(), r.End.UnixMilli(), r.Milli()
		var why *RejectError
		for _, g := range r.GPUs {
			if setOf(replicas, replicaGPU{r.Server, r.Deployment, r.Replica, g.UUID}).overlaps(s, en, span) {
				why = reject(ReasonOverlap, "replica %s/%s on %s from %s", r.Deployment, r.Replica, g.UUID, r.Start.Format(time.RFC3339Nano))
				break
			}
		}
		for _, g := range r.GPUs {
			if why != nil {
				break
			}
			var peak int64
			peak, scratch = setOf(gpus, serverGPU{r.Server, g.UUID}).peak(s, en, span, scratch)
			if peak+g.Milli > 1000 {
				why = reject(ReasonOverCapacity, "GPU %s of %s would carry %d milli", g.UUID, r.Server, peak+g.Milli)
			}
		}
		node := setOf(nodes, r.Server)
		if why == nil {
			var peak int64
			peak, scratch = node.peak(s, en, span, scratch)
			if declared := int64(max(caps.DeclaredGPUs(r.Server), 0)); peak+milli > declared*1000 {
				why = reject(ReasonOverCapacity, "%s would bill %d milli-GPU, declared %d GPUs", r.Server, peak+milli, declared)
			}
		}
		if why != nil {
			t.Rejected = append(t.Rejected, Rejection{
				ID: hex.EncodeToString(e.id[:]), Server: r.Server, Seq: r.Seq, Reason: why.Reason, Detail: why.Error(),
			})
			continue
		}
		for _, g := range r.GPUs {
			setOf(replicas, replicaGPU{r.Server, r.Deployment, r.Replica, g.UUID}).insert(s, en, g.Milli)
			setOf(gpus, serverGPU{r.Server, g.UUID}).insert(s, en, g.Milli)
		}
		node.insert(s, en, milli)
		t.Accepted++
		srv, con := acct(r.Server), acct(r.Consumer)
		srv.Earned += r.Amount
		con.Spent += r.Amount
		if r.Server != r.Consumer {
			u := r.Usage()
			srv.Served += u
			con.Consumed += u
		}
	}
	t.Accounts = make([]Account, 0, len(accts))
	for _, a := range accts {
		t.Accounts = append(t.Accounts, *a)
	}
	slices.SortFunc(t.Accounts, func(a, b Account) int { return cmp.Compare(a.Peer, b.Peer) })
	return t
}

// setOf is m[k], created empty on first use.
func setOf[K comparable](m map[K]*loadSet, k K) *loadSet {
	s, ok := m[k]
	if !ok {
		s = &loadSet{}
		m[k] = s
	}
	return s
}

type replicaGPU struct {
	server              peer.ID
	deployment, replica string
	gpu                 string
}

type serverGPU struct {
	server peer.ID
	gpu    string
}

// ivl is a half-open interval [s, e) in Unix milliseconds carrying load m.
type ivl struct{ s, e, m int64 }

// loadSet holds counted intervals sorted by start. No interval is longer
// than the span passed to its methods, so the ones that can meet [s, e)
// start in (s-span, e).
type loadSet struct{ iv []ivl }

func (ls *loadSet) near(s, e, span int64) []ivl {
	lo, _ := slices.BinarySearchFunc(ls.iv, s-span, func(x ivl, t int64) int { return cmp.Compare(x.s, t) })
	hi, _ := slices.BinarySearchFunc(ls.iv, e, func(x ivl, t int64) int { return cmp.Compare(x.s, t) })
	return ls.iv[lo:hi]
}

func (ls *loadSet) overlaps(s, e, span int64) bool {
	for _, x := range ls.near(s, e, span) {
		if x.e > s {
			return true
		}
	}
	return false
}

type event struct{ t, d int64 }

// peak is the highest load of the set at any instant of [s, e).
func (ls *loadSet) peak(s, e, span int64, buf []event) (int64, []event) {
	buf = buf[:0]
	for _, x := range ls.near(s, e, span) {
		if x.e > s {
			buf = append(buf, event{max(x.s, s), x.m}, event{min(x.e, e), -x.m})
		}
	}
	// Ends sort before starts at the same instant: intervals are half-open.
	slices.SortFunc(buf, func(a, b event) int { return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.d, b.d)) })
	var cur, peak int64
	for _, ev := range buf {
		cur += ev.d
		peak = max(peak, cur)
	}
	return peak, buf
}

func (ls *loadSet) insert(s, e, m int64) {
	i, _ := slices.BinarySearchFunc(ls.iv, s, func(x ivl, t int64) int { return cmp.Compare(x.s, t) })
	for i < len(ls.iv) && ls.iv[i].s == s {
		i++
	}
	ls.iv = slices.Insert(ls.iv, i, ivl{s, e, m})
}
