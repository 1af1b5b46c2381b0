package market

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// world is a small pool where random receipts collide often: few servers,
// replicas and GPUs, intervals on a short stretch of time, sequence numbers
// drawn from a small range.
type world struct {
	ids  []ident
	caps CapacityMap
}

func newWorld(tb testing.TB) world {
	w := world{caps: CapacityMap{}}
	for i := range 4 {
		id := newIdent(tb, byte(10+i))
		w.ids = append(w.ids, id)
		w.caps[id.id] = i % 3 // 0, 1, 2, 0 GPUs declared
	}
	return w
}

func (w world) receipts(tb testing.TB, rng *rand.Rand, n int) [][]byte {
	out := make([][]byte, 0, n)
	for range n {
		srv, con := w.ids[rng.IntN(3)], w.ids[rng.IntN(len(w.ids))]
		start := t0.Add(time.Duration(rng.IntN(40)) * 30 * time.Second)
		r := Receipt{
			Pool: testPool, Server: srv.id, Consumer: con.id,
			Deployment: "dep-" + fmt.Sprint(rng.IntN(2)), Replica: "r-" + fmt.Sprint(rng.IntN(2)), Model: "A10",
			Start: start, End: start.Add(time.Duration(1+rng.IntN(6)) * 30 * time.Second),
			Price: Micro(rng.IntN(3)) * Credit / 2, Seq: uint64(1 + rng.IntN(20)),
		}
		for g := range 3 {
			if rng.IntN(2) == 0 || g == 2 && len(r.GPUs) == 0 {
				r.GPUs = append(r.GPUs, GPUShare{UUID: fmt.Sprint("GPU-", g), Milli: []int64{250, 500, 1000}[rng.IntN(3)]})
			}
		}
		r.fixAmount()
		out = append(out, mustSign(tb, r, srv.key))
	}
	return out
}

func ledgerOf(tb testing.TB, raws [][]byte, now time.Time) *Ledger {
	l := newTestLedger(tb)
	for _, b := range raws {
		l.Add(b, now) // replays are expected
	}
	return l
}

// TestMergeProperties: merging is a set union. a∪b = b∪a, (a∪b)∪b = a∪b,
// a∪a = a, and the union equals a ledger fed every receipt in another
// order; equal sets give equal snapshots and tallies.
func TestMergeProperties(t *testing.T) {
	w := newWorld(t)
	now := t0.Add(time.Hour)
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 1))
		all := w.receipts(t, rng, 60)
		var sa, sb [][]byte
		for _, b := range all {
			switch rng.IntN(3) {
			case 0:
				sa = append(sa, b)
			case 1:
				sb = append(sb, b)
			default:
				sa, sb = append(sa, b), append(sb, b)
			}
		}
		ab := ledgerOf(t, sa, now)
		ab.Merge(ledgerOf(t, sb, now), now)
		ba := ledgerOf(t, sb, now)
		ba.Merge(ledgerOf(t, sa, now), now)
		shuffled := slices.Clone(all)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		whole := ledgerOf(t, shuffled, now)

		want := whole.Snapshot()
		wantTally := whole.Tally(w.caps)
		for name, l := range map[string]*Ledger{"a∪b": ab, "b∪a": ba} {
			if got := l.Snapshot(); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d: %s snapshot %s; want %s", seed, name, got.Root, want.Root)
			}
			if got := l.Tally(w.caps); !reflect.DeepEqual(got, wantTally) {
				t.Fatalf("seed %d: %s tally differs:\n got %+v\nwant %+v", seed, name, got, wantTally)
			}
		}
		ab.Merge(ledgerOf(t, sb, now), now)
		ab.Merge(ab, now)
		if got := ab.Snapshot(); got.Root != want.Root {
			t.Fatalf("seed %d: merging again changed the root", seed)
		}
	}
}

// TestTallyMatchesNaive checks the interval index of Tally against a
// quadratic version, and the invariants of what it accepts: balances sum to
// zero, no GPU above 1000 milli, no node above its declared GPUs.
func TestTallyMatchesNaive(t *testing.T) {
	w := newWorld(t)
	now := t0.Add(time.Hour)
	seen := map[Reason]int{}
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 2))
		l := ledgerOf(t, w.receipts(t, rng, 80), now)
		got := l.Tally(w.caps)
		seen["accepted"] += got.Accepted
		for _, rj := range got.Rejected {
			seen[rj.Reason]++
		}
		accepted := naiveTally(l, w.caps)
		if got.Accepted != len(accepted) {
			t.Fatalf("seed %d: Tally accepted %d; naive %d", seed, got.Accepted, len(accepted))
		}
		if got.Accepted+len(got.Rejected) != l.Len() {
			t.Fatalf("seed %d: %d accepted + %d rejected != %d held", seed, got.Accepted, len(got.Rejected), l.Len())
		}
		var sum Micro
		want := map[peer.ID]Account{}
		for _, e := range accepted {
			s, c := want[e.r.Server], want[e.r.Consumer]
			s.Peer, c.Peer = e.r.Server, e.r.Consumer
			s.Earned += e.r.Amount
			want[e.r.Server] = s
			c = want[e.r.Consumer]
			c.Peer = e.r.Consumer
			c.Spent += e.r.Amount
			if e.r.Server != e.r.Consumer {
				c.Consumed += e.r.Usage()
				s = want[e.r.Server]
				s.Served += e.r.Usage()
				want[e.r.Server] = s
			}
			want[e.r.Consumer] = c
		}
		for _, a := range got.Accounts {
			sum += a.Balance()
			if a != want[a.Peer] {
				t.Fatalf("seed %d: account %+v; naive %+v", seed, a, want[a.Peer])
			}
		}
		if sum != 0 || len(got.Accounts) != len(want) {
			t.Fatalf("seed %d: balances sum %v over %d accounts (naive %d)", seed, sum, len(got.Accounts), len(want))
		}
	}
	// The generator must exercise every path, or the comparison says little.
	for _, r := range []Reason{"accepted", ReasonOverlap, ReasonOverCapacity} {
		if seen[r] < 20 {
			t.Errorf("only %d receipts %q over all seeds: %v", seen[r], r, seen)
		}
	}
	t.Logf("outcomes: %v", seen)
}

// naiveTally is Tally's acceptance rule, quadratic: every check scans
// every accepted receipt and evaluates load at every instant where it can
// peak (the start of the candidate and of each accepted interval).
func naiveTally(l *Ledger, caps Capacities) []*entry {
	var acc []*entry
	meets := func(a, b *Receipt) bool { return a.Start.Before(b.End) && b.Start.Before(a.End) }
	at := func(r *Receipt, p time.Time) bool { return !p.Before(r.Start) && p.Before(r.End) }
	for _, e := range l.sorted() {
		r := &e.r
		ok := true
		points := []time.Time{r.Start}
		for _, x := range acc {
			if x.r.Server == r.Server && meets(&x.r, r) && x.r.Start.After(r.Start) {
				points = append(points, x.r.Start)
			}
		}
		for _, x := range acc {
			if x.r.Server != r.Server || !meets(&x.r, r) || x.r.Deployment != r.Deployment || x.r.Replica != r.Replica {
				continue
			}
			for _, g := range r.GPUs {
				if slices.ContainsFunc(x.r.GPUs, func(h GPUShare) bool { return h.UUID == g.UUID }) {
					ok = false
				}
			}
		}
		for _, p := range points {
			node := r.Milli()
			gpu := map[string]int64{}
			for _, g := range r.GPUs {
				gpu[g.UUID] = g.Milli
			}
			for _, x := range acc {
				if x.r.Server != r.Server || !at(&x.r, p) {
					continue
				}
				node += x.r.Milli()
				for _, g := range x.r.GPUs {
					if _, mine := gpu[g.UUID]; mine {
						gpu[g.UUID] += g.Milli
					}
				}
			}
			if node > int64(caps.DeclaredGPUs(r.Server))*1000 {
				ok = false
			}
			for _, m := range gpu {
				if m > 1000 {
					ok = false
				}
			}
		}
		if ok {
			acc = append(acc, e)
		}
	}
	return acc
}
