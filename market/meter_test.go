package market

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func newTestMeter(t *testing.T, srv ident, clock Clock, next uint64) *Meter {
	t.Helper()
	m, err := NewMeter(MeterConfig{Pool: testPool, Server: srv.id, NextSeq: next}, clock)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testReplica(id string, con ident) Replica {
	return Replica{
		ID: id, Deployment: "dep-1", Consumer: con.id, Model: "RTX 4090",
		GPUs: []GPUShare{{UUID: "GPU-0", Milli: 500}}, Price: 3 * Credit,
	}
}

// span is a receipt's interval as offsets from t0, for messages.
func span(r Receipt) [2]time.Duration { return [2]time.Duration{r.Start.Sub(t0), r.End.Sub(t0)} }

func TestMeterStartStop(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	clk := &fakeClock{now: t0}
	m := newTestMeter(t, srv, clk, 0)
	if err := m.Start(testReplica("r-0", con)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{20, 20, 5} { // heartbeats at 20 s, 40 s; stop at 45 s
		clk.Advance(d * time.Second)
		if d == 20 {
			m.Heartbeat("r-0")
		}
	}
	rs, err := m.Stop("r-0")
	if err != nil || len(rs) != 1 {
		t.Fatalf("Stop = %v, %v; want one receipt", rs, err)
	}
	r := rs[0]
	if span(r) != [2]time.Duration{0, 45 * time.Second} || r.Seq != 1 || r.Usage() != 500*45*1000 {
		t.Errorf("receipt %v seq %d usage %d; want 0..45s, seq 1, 22.5 GPU-s", span(r), r.Seq, r.Usage())
	}
	if want, _ := Cost(3*Credit, r.Usage()); r.Amount != want || want != 18_750 {
		t.Errorf("Amount = %v; want %v (3 credits/GPU-h × 22.5 GPU-s)", r.Amount, want)
	}
	l := newTestLedger(t)
	if _, err := l.Add(mustSign(t, r, srv.key), clk.now); err != nil {
		t.Errorf("ledger refuses the meter's receipt: %v", err)
	}
	if got := m.Running(); len(got) != 0 {
		t.Errorf("Running() after Stop = %v", got)
	}
}

func TestMeterPeriodicCut(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	clk := &fakeClock{now: t0}
	m := newTestMeter(t, srv, clk, 0)
	m.Start(testReplica("r-0", con))
	var got []Receipt
	for range 21 { // 210 s, a heartbeat and a tick every 10 s
		clk.Advance(10 * time.Second)
		rs, err := m.Heartbeat("r-0")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rs...)
		got = append(got, m.Tick()...)
	}
	rs, _ := m.Stop("r-0")
	got = append(got, rs...)
	want := [][2]time.Duration{{0, time.Minute}, {time.Minute, 2 * time.Minute}, {2 * time.Minute, 3 * time.Minute}, {3 * time.Minute, 210 * time.Second}}
	if len(got) != len(want) {
		t.Fatalf("got %d receipts; want %d", len(got), len(want))
	}
	for i, r := range got {
		if span(r) != want[i] || r.Seq != uint64(i+1) {
			t.Errorf("receipt %d: %v seq %d; want %v seq %d", i, span(r), r.Seq, want[i], i+1)
		}
	}
	if m.NextSeq() != 5 {
		t.Errorf("NextSeq() = %d; want 5", m.NextSeq())
	}
}

// TestMeterCrashLosesAtMostOnePeriod: a daemon that dies at a random
// instant has billed all confirmed time but less than one Period; the
// restarted meter resumes numbering from the ledger and its receipts are
// accepted next to the old ones.
func TestMeterCrashLosesAtMostOnePeriod(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 50 {
		clk := &fakeClock{now: t0}
		m := newTestMeter(t, srv, clk, 0)
		m.Start(testReplica("r-0", con))
		beat := time.Duration(1+rng.IntN(15)) * time.Second
		crash := time.Duration(rng.IntN(600_000)) * time.Millisecond
		l := newTestLedger(t)
		var lastBeat time.Time
		for clk.now.Add(beat).Sub(t0) <= crash {
			clk.Advance(beat)
			rs, _ := m.Heartbeat("r-0")
			lastBeat = clk.now
			for _, r := range append(rs, m.Tick()...) {
				if _, err := l.Add(mustSign(t, r, srv.key), clk.now); err != nil {
					t.Fatalf("trial %d: %v", trial, err)
				}
			}
		}
		caps := CapacityMap{srv.id: 1}
		billed := l.Tally(caps).Account(con.id).Consumed
		confirmed := GPUTime(lastBeat.Sub(t0).Milliseconds()) * 500
		if lastBeat.IsZero() {
			confirmed = 0
		}
		if billed > confirmed || confirmed-billed >= GPUTime(DefaultPeriod.Milliseconds())*500 {
			t.Fatalf("trial %d (beat %s, crash %s): billed %.1f GPU-s of %.1f confirmed; want at most one period lost",
				trial, beat, crash, billed.Seconds(), confirmed.Seconds())
		}
		// Restart: a new meter numbers on from the ledger.
		clk.Advance(time.Second)
		m2 := newTestMeter(t, srv, clk, l.NextSeq(srv.id))
		m2.Start(testReplica("r-0", con))
		clk.Advance(20 * time.Second)
		rs, _ := m2.Stop("r-0")
		for _, r := range rs {
			if _, err := l.Add(mustSign(t, r, srv.key), clk.now); err != nil {
				t.Fatalf("trial %d: restarted meter's receipt refused: %v", trial, err)
			}
		}
		if tal := l.Tally(caps); len(tal.Rejected) != 0 {
			t.Fatalf("trial %d: rejected %v", trial, tal.Rejected)
		}
	}
}

func TestMeterStale(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	clk := &fakeClock{now: t0}
	m := newTestMeter(t, srv, clk, 0)
	m.Start(testReplica("r-0", con))
	m.Start(testReplica("r-1", con))
	clk.Advance(20 * time.Second)
	m.Heartbeat("r-0")
	m.Heartbeat("r-1")

	// r-1 falls silent; r-0 heartbeats on. After StaleAfter of silence Tick
	// bills r-1 up to its last heartbeat and forgets it.
	var cut []Receipt
	for range 4 {
		clk.Advance(10 * time.Second)
		rs, _ := m.Heartbeat("r-0")
		cut = append(cut, rs...)
	}
	if len(cut) != 1 || cut[0].Replica != "r-0" || span(cut[0]) != [2]time.Duration{0, time.Minute} {
		t.Fatalf("heartbeats cut %+v; want r-0 billed 0..60s", cut)
	}
	rs := m.Tick()
	if len(rs) != 1 || rs[0].Replica != "r-1" || span(rs[0]) != [2]time.Duration{0, 20 * time.Second} {
		t.Fatalf("Tick = %+v; want r-1 billed 0..20s", rs)
	}
	if _, err := m.Heartbeat("r-1"); !errors.Is(err, ErrUnknownReplica) {
		t.Errorf("Heartbeat(stale) = %v; want ErrUnknownReplica", err)
	}

	// A heartbeat after a long gap (no Tick in between) does not bill the gap.
	clk.Advance(45 * time.Second)
	rs, err := m.Heartbeat("r-0")
	if err != nil || len(rs) != 0 {
		t.Fatalf("Heartbeat after gap = %+v, %v; want nothing billed", rs, err)
	}
	clk.Advance(10 * time.Second)
	rs, _ = m.Stop("r-0")
	if len(rs) != 1 || span(rs[0]) != [2]time.Duration{105 * time.Second, 115 * time.Second} {
		t.Fatalf("Stop = %+v; want 105..115s (the 45 s gap unbilled)", rs)
	}
}

func TestMeterErrors(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	clk := &fakeClock{now: t0}
	m := newTestMeter(t, srv, clk, 0)
	bad := func(mod func(*Replica)) Replica {
		r := testReplica("r-x", con)
		mod(&r)
		return r
	}
	for _, tc := range []struct {
		name string
		r    Replica
		want error
	}{
		{"no ID", bad(func(r *Replica) { r.ID = "" }), ErrInvalidReplica},
		{"milli 0", bad(func(r *Replica) { r.GPUs[0].Milli = 0 }), ErrInvalidReplica},
		{"milli 1001", bad(func(r *Replica) { r.GPUs[0].Milli = 1001 }), ErrInvalidReplica},
		{"GPU twice", bad(func(r *Replica) { r.GPUs = append(r.GPUs, r.GPUs[0]) }), ErrInvalidReplica},
		{"negative price", bad(func(r *Replica) { r.Price = -1 }), ErrInvalidReplica},
		{"no model", bad(func(r *Replica) { r.Model = "" }), ErrInvalidReplica},
	} {
		if err := m.Start(tc.r); !errors.Is(err, tc.want) {
			t.Errorf("%s: Start = %v; want %v", tc.name, err, tc.want)
		}
	}
	m.Start(testReplica("r-0", con))
	if err := m.Start(testReplica("r-0", con)); !errors.Is(err, ErrReplicaExists) {
		t.Errorf("Start twice = %v; want ErrReplicaExists", err)
	}
	if _, err := m.Stop("nope"); !errors.Is(err, ErrUnknownReplica) {
		t.Errorf("Stop(unknown) = %v; want ErrUnknownReplica", err)
	}
	// A CPU-only replica is metered and never billed.
	cpu := testReplica("cpu", con)
	cpu.GPUs, cpu.Model = nil, ""
	if err := m.Start(cpu); err != nil {
		t.Fatalf("Start(cpu-only) = %v", err)
	}
	clk.Advance(2 * time.Minute)
	m.Heartbeat("cpu")
	if rs, _ := m.Stop("cpu"); len(rs) != 0 {
		t.Errorf("CPU-only replica billed: %+v", rs)
	}
	// Flush bills what was confirmed, whatever its length; silence longer
	// than StaleAfter is never billed.
	m.Heartbeat("r-0") // 2 min after start: the silence before is not billed
	clk.Advance(20 * time.Second)
	m.Heartbeat("r-0")
	if rs := m.Flush(); len(rs) != 1 || span(rs[0]) != [2]time.Duration{2 * time.Minute, 140 * time.Second} {
		t.Errorf("Flush = %+v; want 120..140s", rs)
	}
	for _, cfg := range []MeterConfig{
		{Server: srv.id},
		{Pool: testPool},
		{Pool: testPool, Server: srv.id, Period: time.Millisecond},
		{Pool: testPool, Server: srv.id, Period: DefaultMaxSpan},
	} {
		if _, err := NewMeter(cfg, clk); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewMeter(%+v) = %v; want ErrInvalidConfig", cfg, err)
		}
	}
}
