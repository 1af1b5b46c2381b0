package market

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestLedgerRejects has one case per rejection reason: a receipt refused
// at intake (Add returns the error) or held but not counted (Tally lists
// it). Either way balances only reflect the good receipts.
func TestLedgerRejects(t *testing.T) {
	srv, con, other := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3)
	now := t0.Add(time.Hour)
	caps := CapacityMap{srv.id: 2}
	good := receipt(srv, con, 1, t0)
	goodB := mustSign(t, good, srv.key)
	with := func(seq uint64, mod func(*Receipt)) Receipt {
		r := receipt(srv, con, seq, t0)
		mod(&r)
		return r
	}
	for _, tc := range []struct {
		name    string
		bad     []byte
		caps    Capacities
		wantAdd error  // from Add
		wantTal Reason // in Tally.Rejected
	}{
		{
			name: "bad signature",
			bad: func() []byte {
				b := mustSign(t, with(2, func(r *Receipt) { r.Replica = "r-1" }), srv.key)
				b[len(b)-3] ^= 4
				return b
			}(),
			wantAdd: ErrSignature,
		},
		{
			name: "a held receipt under a flipped signature",
			bad: func() []byte {
				b := bytes.Clone(goodB)
				b[len(b)-1] ^= 1
				return b
			}(),
			wantAdd: ErrSignature,
		},
		{
			name: "signed by another node than it names",
			bad: signRaw(t, with(2, func(r *Receipt) {
				r.Start, r.End = r.Start.Add(time.Hour), r.End.Add(time.Hour)
			}), other.key),
			wantAdd: ErrSignature,
		},
		{
			name:    "foreign pool",
			bad:     mustSign(t, with(2, func(r *Receipt) { r.Pool = "pool-other"; r.Replica = "r-1" }), srv.key),
			wantAdd: ErrForeignPool,
		},
		{
			name:    "replay by sequence",
			bad:     mustSign(t, with(1, func(r *Receipt) { r.Replica = "r-1" }), srv.key),
			wantAdd: ErrReplay,
		},
		{
			name:    "overlapping interval, same replica and GPU",
			bad:     mustSign(t, with(2, func(r *Receipt) { r.Start, r.End = r.Start.Add(30*time.Second), r.End.Add(30*time.Second) }), srv.key),
			wantTal: ReasonOverlap,
		},
		{
			name:    "inflated amount",
			bad:     signRaw(t, with(2, func(r *Receipt) { r.Replica = "r-1"; r.Amount *= 10 }), srv.key),
			wantAdd: ErrAmount,
		},
		{
			name:    "milli out of range",
			bad:     signRaw(t, with(2, func(r *Receipt) { r.Replica = "r-1"; r.GPUs[0].Milli = 1500; r.fixAmount() }), srv.key),
			wantAdd: ErrMilli,
		},
		{
			name: "future interval beyond skew",
			bad: mustSign(t, with(2, func(r *Receipt) {
				r.Start, r.End = now.Add(DefaultMaxSkew), now.Add(DefaultMaxSkew+time.Second)
				r.fixAmount()
			}), srv.key),
			wantAdd: ErrFuture,
		},
		{
			name: "interval longer than the span limit",
			bad: mustSign(t, with(2, func(r *Receipt) {
				r.Replica, r.Start = "r-1", r.End.Add(-DefaultMaxSpan-time.Millisecond)
				r.fixAmount()
			}), srv.key),
			wantAdd: ErrMalformed,
		},
		{
			name: "over capacity: one GPU above 1000 milli",
			bad: mustSign(t, with(2, func(r *Receipt) {
				r.Replica, r.GPUs[0].Milli = "r-1", 600
				r.fixAmount()
			}), srv.key),
			wantTal: ReasonOverCapacity,
		},
		{
			name: "over capacity: more GPUs than declared",
			bad: mustSign(t, with(2, func(r *Receipt) {
				r.Replica, r.GPUs = "r-1", []GPUShare{{"GPU-1", 1000}, {"GPU-2", 1000}}
				r.fixAmount()
			}), srv.key),
			wantTal: ReasonOverCapacity,
		},
		{
			name: "over capacity: serving node never declared GPUs",
			bad: mustSign(t, func() Receipt {
				r := receipt(other, con, 1, t0)
				return r
			}(), other.key),
			wantTal: ReasonOverCapacity,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLedger(t)
			if _, err := l.Add(goodB, now); err != nil {
				t.Fatalf("Add(good) = %v", err)
			}
			_, err := l.Add(tc.bad, now)
			if tc.wantAdd != nil {
				if !errors.Is(err, tc.wantAdd) {
					t.Fatalf("Add(bad) = %v; want %v", err, tc.wantAdd)
				}
				counts, recent := l.Rejections()
				if r := ReasonOf(err); counts[r] != 1 || len(recent) != 1 || recent[0].Reason != r {
					t.Errorf("Rejections() = %v, %v; want one %q", counts, recent, r)
				}
			} else if err != nil {
				t.Fatalf("Add(bad) = %v; want it held and judged by Tally", err)
			}
			c := tc.caps
			if c == nil {
				c = caps
			}
			tal := l.Tally(c)
			if tc.wantTal != "" {
				if len(tal.Rejected) != 1 || tal.Rejected[0].Reason != tc.wantTal {
					t.Fatalf("Tally().Rejected = %+v; want one %q", tal.Rejected, tc.wantTal)
				}
			} else if len(tal.Rejected) != 0 {
				t.Fatalf("Tally().Rejected = %+v; want none", tal.Rejected)
			}
			// Whatever was refused, exactly the good receipt counts.
			if tal.Accepted != 1 {
				t.Errorf("Tally().Accepted = %d; want 1", tal.Accepted)
			}
			if got := tal.Account(srv.id); got.Earned != good.Amount || got.Served != good.Usage() {
				t.Errorf("server account = %+v; want earned %v served %d", got, good.Amount, good.Usage())
			}
			if got := tal.Account(con.id); got.Spent != good.Amount || got.Consumed != good.Usage() {
				t.Errorf("consumer account = %+v; want spent %v consumed %d", got, good.Amount, good.Usage())
			}
		})
	}
}

func TestLedgerDuplicateIsIdempotent(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	b := mustSign(t, receipt(srv, con, 1, t0), srv.key)
	l := newTestLedger(t)
	for i, want := range []bool{true, false, false} {
		added, err := l.Add(b, t0.Add(time.Hour))
		if err != nil || added != want {
			t.Errorf("Add #%d = %v, %v; want %v, nil", i, added, err, want)
		}
	}
	if l.Len() != 1 {
		t.Errorf("Len() = %d; want 1", l.Len())
	}
	if counts, _ := l.Rejections(); len(counts) != 0 {
		t.Errorf("a resent receipt counted as rejected: %v", counts)
	}
}

func TestLedgerCounts(t *testing.T) {
	a, b, c := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3)
	l := newTestLedger(t)
	now := t0.Add(time.Hour)
	add := func(r Receipt, key ident) {
		t.Helper()
		if _, err := l.Add(mustSign(t, r, key.key), now); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	// a serves b for two minutes on a whole GPU at 3 credits/GPU-h; b serves
	// a for a minute at half a GPU for free; c serves itself.
	r1 := receipt(a, b, 1, t0)
	r1.GPUs[0].Milli, r1.Price = 1000, 3*Credit
	r1.fixAmount()
	r2 := r1
	r2.Seq, r2.Start, r2.End = 2, r1.End, r1.End.Add(time.Minute)
	r3 := receipt(b, a, 1, t0)
	r3.Price = 0
	r3.fixAmount()
	r4 := receipt(c, c, 1, t0)
	add(r1, a)
	add(r2, a)
	add(r3, b)
	add(r4, c)
	tal := l.Tally(CapacityMap{a.id: 1, b.id: 1, c.id: 1})
	if tal.Accepted != 4 || len(tal.Rejected) != 0 {
		t.Fatalf("Tally = %d accepted, %v rejected; want 4, none", tal.Accepted, tal.Rejected)
	}
	if got := tal.Account(a.id); got.Earned != 100_000 || got.Spent != 0 || got.Served != 2*60*GPUSecond || got.Consumed != 30*GPUSecond {
		t.Errorf("a = %+v", got)
	}
	if got := tal.Account(b.id); got.Balance() != -100_000 || got.Served != 30*GPUSecond {
		t.Errorf("b = %+v", got)
	}
	if got := tal.Account(c.id); got.Balance() != 0 || got.Earned != r4.Amount || got.Served != 0 || got.Consumed != 0 {
		t.Errorf("c (served itself) = %+v; want earned = spent and no contribution", got)
	}
	var sum Micro
	for _, acct := range tal.Accounts {
		sum += acct.Balance()
	}
	if sum != 0 {
		t.Errorf("balances sum to %v; want 0", sum)
	}
	if got := l.NextSeq(a.id); got != 3 {
		t.Errorf("NextSeq(a) = %d; want 3", got)
	}
	if got := l.NextSeq(newIdent(t, 9).id); got != 1 {
		t.Errorf("NextSeq(unknown) = %d; want 1", got)
	}

	rep := l.Report(CapacityMap{a.id: 1, b.id: 1, c.id: 1})
	if rep.Receipts != 4 || rep.Accepted != 4 || rep.Rejected != 0 || len(rep.Identities) != 3 || rep.Root != l.Snapshot().Root {
		t.Errorf("Report = %+v", rep)
	}
}

func TestSnapshot(t *testing.T) {
	a, b, c := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3)
	now := t0.Add(time.Hour)
	x, y := newTestLedger(t), newTestLedger(t)
	empty := x.Snapshot()
	ra := mustSign(t, receipt(a, c, 1, t0), a.key)
	rb := mustSign(t, receipt(b, c, 1, t0), b.key)
	x.Add(ra, now)
	x.Add(rb, now)
	y.Add(rb, now)
	y.Add(ra, now)
	sx, sy := x.Snapshot(), y.Snapshot()
	if sx.Root != sy.Root || sx.Root == empty.Root {
		t.Errorf("same receipts in another order: roots %s, %s (empty %s)", sx.Root, sy.Root, empty.Root)
	}
	if d := sx.Differ(sy); len(d) != 0 {
		t.Errorf("Differ of equal snapshots = %v", d)
	}
	rb2 := mustSign(t, receipt(b, c, 2, t0.Add(time.Minute)), b.key)
	y.Add(rb2, now)
	sy = y.Snapshot()
	if sx.Root == sy.Root {
		t.Error("roots equal after y got another receipt")
	}
	if d := sx.Differ(sy); len(d) != 1 || d[0] != b.id {
		t.Errorf("Differ = %v; want [%s]", d, b.id)
	}
	if d := sx.Differ(empty); len(d) != 2 {
		t.Errorf("Differ(empty) = %v; want both servers", d)
	}
	for _, h := range sy.Heads {
		if h.Server == b.id && (h.MaxSeq != 2 || h.Receipts != 2) {
			t.Errorf("head of b = %+v; want 2 receipts up to seq 2", h)
		}
	}
	// Receipts ship in canonical order and rebuild the same ledger.
	z := newTestLedger(t)
	for _, raw := range y.Receipts() {
		if _, err := z.Add(raw, now); err != nil {
			t.Fatal(err)
		}
	}
	if z.Snapshot().Root != sy.Root {
		t.Error("a ledger rebuilt from Receipts() has another root")
	}
	if !bytes.Equal(y.Receipts()[0], z.Receipts()[0]) {
		t.Error("Receipts() order differs")
	}
}

func TestLedgerConfig(t *testing.T) {
	for _, cfg := range []LedgerConfig{{}, {Pool: "p", MaxSpan: time.Millisecond}, {Pool: "p", MaxSkew: -1}} {
		if _, err := NewLedger(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewLedger(%+v) = %v; want ErrInvalidConfig", cfg, err)
		}
	}
	x := newTestLedger(t)
	y, _ := NewLedger(LedgerConfig{Pool: "other"})
	if err := x.Merge(y, t0); !errors.Is(err, ErrForeignPool) {
		t.Errorf("Merge(other pool) = %v; want ErrForeignPool", err)
	}
}

// ReceiptsOf hands out one server's receipts above a sequence number, in
// order and bounded: what a peer with an older head needs.
func TestLedgerReceiptsOf(t *testing.T) {
	srv, other, con := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3)
	l := newTestLedger(t)
	now := t0.Add(time.Hour)
	var mine [][]byte
	for seq := uint64(1); seq <= 5; seq++ {
		b := mustSign(t, receipt(srv, con, seq, t0.Add(time.Duration(seq)*time.Minute)), srv.key)
		mine = append(mine, b)
		if _, err := l.Add(b, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Add(mustSign(t, receipt(other, con, 1, t0), other.key), now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		after     uint64
		limit     int
		wantFirst int // index into mine
		wantN     int
	}{
		{0, 0, 0, 5}, {2, 0, 2, 3}, {2, 2, 2, 2}, {5, 0, 0, 0}, {9, 0, 0, 0},
	} {
		got := l.ReceiptsOf(srv.id, tc.after, tc.limit)
		if len(got) != tc.wantN {
			t.Errorf("ReceiptsOf(after %d, limit %d) = %d receipts; want %d", tc.after, tc.limit, len(got), tc.wantN)
			continue
		}
		for i, b := range got {
			if !bytes.Equal(b, mine[tc.wantFirst+i]) {
				t.Errorf("ReceiptsOf(after %d)[%d] is not receipt %d", tc.after, i, tc.wantFirst+i+1)
			}
		}
	}
}
