package market

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Ledger limits and defaults.
const (
	// DefaultMaxSkew is how far past now a receipt's interval may end: the
	// clock-skew allowance between the serving node and the reader.
	DefaultMaxSkew = 2 * time.Minute
	// DefaultMaxSpan is the longest interval one receipt may cover. The
	// Meter cuts every Period (a minute by default), so an honest receipt is
	// far shorter; the bound also keeps the capacity check local in time.
	DefaultMaxSpan = time.Hour
	// DefaultKeepRejections is how many recent intake rejections a Ledger
	// keeps for reports.
	DefaultKeepRejections = 100
)

// LedgerConfig configures a Ledger.
type LedgerConfig struct {
	// Pool is the pool ID; receipts for any other pool are refused.
	Pool string
	// MaxSkew is the clock-skew allowance for receipts that end in the
	// future. Default DefaultMaxSkew.
	MaxSkew time.Duration
	// MaxSpan is the longest interval one receipt may cover, at most
	// MaxSpanLimit. Every node of a pool must use the same value, or their
	// balances may differ. Default DefaultMaxSpan.
	MaxSpan time.Duration
	// KeepRejections is how many recent intake rejections Rejections
	// returns. Default DefaultKeepRejections.
	KeepRejections int
}

func (c *LedgerConfig) validate() error {
	if c.MaxSkew == 0 {
		c.MaxSkew = DefaultMaxSkew
	}
	if c.MaxSpan == 0 {
		c.MaxSpan = DefaultMaxSpan
	}
	if c.KeepRejections == 0 {
		c.KeepRejections = DefaultKeepRejections
	}
	switch {
	case c.Pool == "":
		return fmt.Errorf("%w: no pool ID", ErrInvalidConfig)
	case c.MaxSkew < 0 || c.MaxSpan < time.Second || c.MaxSpan > MaxSpanLimit || c.KeepRejections < 0:
		return fmt.Errorf("%w: skew %s, span %s, keep %d", ErrInvalidConfig, c.MaxSkew, c.MaxSpan, c.KeepRejections)
	}
	return nil
}

// Capacities tells how many GPUs each serving node declared (from its
// signed node record). Every node of a pool must answer alike for the same
// peer for balances to agree; a node keeps the last count it saw for every
// peer, including peers that left. A peer it never saw declared 0 GPUs, so
// none of its receipts count until it is known.
type Capacities interface {
	DeclaredGPUs(server peer.ID) int
}

// CapacityMap is Capacities from a map.
type CapacityMap map[peer.ID]int

// DeclaredGPUs is m[server].
func (m CapacityMap) DeclaredGPUs(server peer.ID) int { return m[server] }

var _ Capacities = CapacityMap(nil)

// entry is a stored receipt: verified at intake.
type entry struct {
	raw []byte
	r   Receipt
	id  [32]byte
}

type seqKey struct {
	server peer.ID
	seq    uint64
}

// Ledger is a set of verified usage receipts of one pool, from which
// anyone computes the same balances (Tally). Receipts enter only through
// Add, which verifies each one on its own (encoding, signature, pool,
// shares, amount, clock); the checks that need the whole set (overlapping
// intervals, capacity) are made by Tally in a canonical order, so the
// result depends only on the set, never on the order receipts arrived in.
// Per serving node and sequence number the ledger keeps one receipt, the one
// with the lowest ID, so two ledgers that saw the same receipts hold the
// same set: Merge is a union, idempotent and commutative.
//
// Not safe for concurrent use; the daemon serialises calls.
type Ledger struct {
	cfg      LedgerConfig
	bySeq    map[seqKey]*entry
	ids      map[[32]byte]struct{}
	rejected map[Reason]int
	recent   []Rejection
}

// NewLedger is an empty ledger for cfg.Pool.
func NewLedger(cfg LedgerConfig) (*Ledger, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Ledger{cfg: cfg, bySeq: map[seqKey]*entry{}, ids: map[[32]byte]struct{}{}, rejected: map[Reason]int{}}, nil
}

// Rejection is a receipt a ledger did not count, and why.
type Rejection struct {
	ID     string  `json:"id,omitempty"` // hex sha256 of the receipt's signed body; empty if undecodable
	Server peer.ID `json:"server,omitempty"`
	Seq    uint64  `json:"seq,omitempty"`
	Reason Reason  `json:"reason"`
	Detail string  `json:"detail,omitempty"`
}

// Add verifies a signed receipt and stores it. It reports whether the set
// changed; a receipt already held changes nothing and is not an error.
// Errors are *RejectError (test with errors.Is against the sentinels); the
// ledger counts them by reason. A receipt that reuses a sequence number of
// its serving node is a replay: the ledger keeps whichever of the two has
// the lower ID (so every ledger keeps the same one, whatever the order they
// came in), counts the other as rejected and returns ErrReplay, with added
// true if the new receipt was the one kept.
func (l *Ledger) Add(raw []byte, now time.Time) (added bool, err error) {
	d, err := decode(raw)
	if err == nil {
		err = l.admit(d, raw, now)
	}
	if err != nil {
		l.noteReject(d, err)
		return false, err
	}
	return l.put(&entry{raw: slices.Clone(raw), r: d.r, id: d.id})
}

// admit is every check one receipt can pass or fail on its own, cheapest
// first (the signature last).
func (l *Ledger) admit(d *decoded, raw []byte, now time.Time) error {
	if d.r.Pool != l.cfg.Pool {
		return reject(ReasonForeignPool, "pool %q", d.r.Pool)
	}
	if e, ok := l.bySeq[seqKey{d.r.Server, d.r.Seq}]; ok && e.id == d.id && bytes.Equal(e.raw, raw) {
		return nil // already held: verified when it came in
	}
	// A held body under another signature is checked like any receipt:
	// ed25519 signatures are unique, so it fails.
	if err := d.r.Check(l.cfg.MaxSpan); err != nil {
		return err
	}
	if err := l.checkClock(&d.r, now); err != nil {
		return err
	}
	return d.verify()
}

func (l *Ledger) checkClock(r *Receipt, now time.Time) error {
	if ahead := r.End.Sub(now); ahead > l.cfg.MaxSkew {
		return reject(ReasonFuture, "ends %s after now, allowance %s", ahead.Round(time.Millisecond), l.cfg.MaxSkew)
	}
	return nil
}

// put stores e under the one-per-sequence rule and reports whether the set
// changed. Of two receipts with one sequence number the one with the lower
// ID stays; the other is counted as a replay and ErrReplay returned.
func (l *Ledger) put(e *entry) (bool, error) {
	if _, ok := l.ids[e.id]; ok {
		return false, nil
	}
	k := seqKey{e.r.Server, e.r.Seq}
	old, ok := l.bySeq[k]
	if !ok {
		l.bySeq[k], l.ids[e.id] = e, struct{}{}
		return true, nil
	}
	loser := e
	if bytes.Compare(e.id[:], old.id[:]) < 0 {
		loser = old
		delete(l.ids, old.id)
		l.bySeq[k], l.ids[e.id] = e, struct{}{}
	}
	err := reject(ReasonReplay, "sequence %d of %s used twice", k.seq, k.server)
	l.noteReject(&decoded{r: loser.r, id: loser.id}, err)
	return loser != e, err
}

func (l *Ledger) noteReject(d *decoded, err error) {
	reason := ReasonOf(err)
	l.rejected[reason]++
	if l.cfg.KeepRejections <= 0 {
		return
	}
	rj := Rejection{Reason: reason, Detail: err.Error()}
	if d != nil {
		rj.ID, rj.Server, rj.Seq = hex.EncodeToString(d.id[:]), d.r.Server, d.r.Seq
	}
	if len(l.recent) == l.cfg.KeepRejections {
		l.recent = append(l.recent[:0], l.recent[1:]...)
	}
	l.recent = append(l.recent, rj)
}

// Merge adds every receipt of o to l. Both hold only verified receipts, so
// only the pool and the clock are checked again; the two ledgers then share
// the (immutable) stored receipts. Merge is idempotent and
// commutative: a.Merge(b) and b.Merge(a) leave the same set and Tally.
func (l *Ledger) Merge(o *Ledger, now time.Time) error {
	if o.cfg.Pool != l.cfg.Pool {
		return fmt.Errorf("%w: merging pool %q into %q", ErrForeignPool, o.cfg.Pool, l.cfg.Pool)
	}
	if o.cfg.MaxSpan > l.cfg.MaxSpan {
		return fmt.Errorf("%w: merging a ledger with a longer span limit", ErrInvalidConfig)
	}
	for _, e := range o.sorted() {
		if err := l.checkClock(&e.r, now); err != nil {
			l.noteReject(&decoded{r: e.r, id: e.id}, err)
			continue
		}
		l.put(e)
	}
	return nil
}

// Len is the number of receipts held.
func (l *Ledger) Len() int { return len(l.bySeq) }

// Receipts returns the signed receipts held, in canonical order (serving
// peer, then sequence): what a node sends a peer whose snapshot differs.
func (l *Ledger) Receipts() [][]byte {
	es := l.sorted()
	out := make([][]byte, len(es))
	for i, e := range es {
		out[i] = slices.Clone(e.raw)
	}
	return out
}

// ReceiptsOf returns the signed receipts of server with a sequence number
// above after, in sequence order, at most limit of them (limit <= 0: all):
// what a node sends a peer whose head for server differs from its own.
func (l *Ledger) ReceiptsOf(server peer.ID, after uint64, limit int) [][]byte {
	var es []*entry
	for k, e := range l.bySeq {
		if k.server == server && k.seq > after {
			es = append(es, e)
		}
	}
	slices.SortFunc(es, func(a, b *entry) int { return cmp.Compare(a.r.Seq, b.r.Seq) })
	if limit > 0 && len(es) > limit {
		es = es[:limit]
	}
	out := make([][]byte, len(es))
	for i, e := range es {
		out[i] = slices.Clone(e.raw)
	}
	return out
}

// NextSeq is one above the highest sequence number held for server: where a
// restarted Meter of that server resumes.
func (l *Ledger) NextSeq(server peer.ID) uint64 {
	var max uint64
	for k := range l.bySeq {
		if k.server == server && k.seq > max {
			max = k.seq
		}
	}
	return max + 1
}

// Rejections returns how many receipts Add and Merge refused, by reason,
// and the most recent ones. Receipts that Tally does not count are in the
// Tally.
func (l *Ledger) Rejections() (map[Reason]int, []Rejection) {
	counts := make(map[Reason]int, len(l.rejected))
	for r, n := range l.rejected {
		counts[r] = n
	}
	return counts, slices.Clone(l.recent)
}

func (l *Ledger) sorted() []*entry {
	es := make([]*entry, 0, len(l.bySeq))
	for _, e := range l.bySeq {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *entry) int {
		return cmp.Or(cmp.Compare(a.r.Server, b.r.Server), cmp.Compare(a.r.Seq, b.r.Seq))
	})
	return es
}

// Snapshot is a compact digest of a ledger: equal Roots mean equal receipt
// sets (and so equal Tallies under equal Capacities). Heads say which
// serving nodes' receipts differ, and up to which sequence number each side
// holds them.
type Snapshot struct {
	Pool     string       `json:"pool"`
	Receipts int          `json:"receipts"`
	Root     string       `json:"root"` // hex sha256
	Heads    []ServerHead `json:"heads"`
}

// ServerHead digests the receipts of one serving node.
type ServerHead struct {
	Server   peer.ID `json:"server"`
	Receipts int     `json:"receipts"`
	MaxSeq   uint64  `json:"max_seq"`
	Digest   string  `json:"digest"` // hex sha256 of the receipt IDs in sequence order
}

// Snapshot digests the ledger.
func (l *Ledger) Snapshot() Snapshot {
	es := l.sorted()
	s := Snapshot{Pool: l.cfg.Pool, Receipts: len(es), Heads: []ServerHead{}}
	root := sha256.New()
	root.Write([]byte("shoal/ledger/v1\x00"))
	for i := 0; i < len(es); {
		j := i
		h := sha256.New()
		for ; j < len(es) && es[j].r.Server == es[i].r.Server; j++ {
			h.Write(es[j].id[:])
		}
		head := ServerHead{Server: es[i].r.Server, Receipts: j - i, MaxSeq: es[j-1].r.Seq, Digest: hex.EncodeToString(h.Sum(nil))}
		s.Heads = append(s.Heads, head)
		var b []byte
		b = binary.AppendUvarint(b, uint64(len(head.Server)))
		b = append(b, head.Server...)
		b = binary.AppendUvarint(b, uint64(head.Receipts))
		b = binary.AppendUvarint(b, head.MaxSeq)
		root.Write(append(b, head.Digest...))
		i = j
	}
	s.Root = hex.EncodeToString(root.Sum(nil))
	return s
}

// Differ lists the serving nodes whose receipts differ between s and o:
// the ones to exchange.
func (s Snapshot) Differ(o Snapshot) []peer.ID {
	mine := make(map[peer.ID]ServerHead, len(s.Heads))
	for _, h := range s.Heads {
		mine[h.Server] = h
	}
	var out []peer.ID
	for _, h := range o.Heads {
		if m, ok := mine[h.Server]; !ok || m.Digest != h.Digest {
			out = append(out, h.Server)
		}
		delete(mine, h.Server)
	}
	for id := range mine {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
