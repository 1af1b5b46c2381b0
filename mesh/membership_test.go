package mesh

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestMembershipTimeline(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := newMembership(timing{suspectAfter: 3 * time.Second, deadAfter: 6 * time.Second, forgetAfter: time.Minute})
	a, b := peer.ID("a"), peer.ID("b")
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	state := func(id peer.ID) State { s, _ := m.state(id); return s }

	steps := []struct {
		name string
		do   func()
		id   peer.ID
		want State
	}{
		{"first heartbeat", func() { m.heartbeat(at(0), a, heartbeat{Instance: "i1", Seq: 1}) }, a, StateAlive},
		{"silent 2s", func() { m.tick(at(2)) }, a, StateAlive},
		{"silent 3.5s", func() { m.tick(at(3.5)) }, a, StateSuspect},
		{"heartbeat revives", func() { m.heartbeat(at(4), a, heartbeat{Instance: "i1", Seq: 2}) }, a, StateAlive},
		{"replayed old heartbeat ignored", func() { m.heartbeat(at(9), a, heartbeat{Instance: "i1", Seq: 2}) }, a, StateAlive},
		{"silent 6.5s after last", func() { m.tick(at(10.6)) }, a, StateDead},
		{"restart with new instance", func() { m.heartbeat(at(11), a, heartbeat{Instance: "i2", Seq: 1}) }, a, StateAlive},
		{"b says goodbye", func() { m.heartbeat(at(11), b, heartbeat{Instance: "j", Seq: 1, Leaving: true}) }, b, StateLeft},
		{"late heartbeat after leave", func() { m.heartbeat(at(11.5), b, heartbeat{Instance: "j", Seq: 2}) }, b, StateLeft},
		{"left stays left", func() { m.tick(at(30)) }, b, StateLeft},
		{"forgotten after a minute", func() { m.tick(at(72)) }, b, ""},
	}
	for _, s := range steps {
		s.do()
		if got := state(s.id); got != s.want {
			t.Fatalf("after %s: state(%s) = %q; want %q", s.name, s.id, got, s.want)
		}
	}
}

func TestMembershipRecords(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := newMembership(timing{time.Second, 2 * time.Second, time.Minute})
	a := peer.ID("a")
	if stored, _ := m.record(t0, a, &Record{Seq: 5}, nil, false); stored {
		t.Fatalf("record of an unknown member from the DHT was stored; want ignored")
	}
	want, _ := m.heartbeat(t0, a, heartbeat{Instance: "i", Seq: 1, RecordSeq: 5})
	if !want {
		t.Fatalf("heartbeat advertising record 5 with none held: wantRecord = false; want true")
	}
	if stored, _ := m.record(t0, a, &Record{Seq: 5}, nil, false); !stored {
		t.Fatalf("record 5 not stored")
	}
	if stored, _ := m.record(t0, a, &Record{Seq: 4}, nil, true); stored {
		t.Errorf("older record 4 replaced record 5")
	}
	if want, _ := m.heartbeat(t0, a, heartbeat{Instance: "i", Seq: 2, RecordSeq: 5}); want {
		t.Errorf("heartbeat advertising the held record asks for it again")
	}
	if want, _ := m.heartbeat(t0, a, heartbeat{Instance: "i", Seq: 3, RecordSeq: 6}); !want {
		t.Errorf("heartbeat advertising record 6 does not ask for it")
	}
}

func TestUnhealthyNodeStretchesTimeouts(t *testing.T) {
	start := time.Unix(1000, 0)
	m := newMembership(timing{suspectAfter: time.Second, deadAfter: 2 * time.Second, forgetAfter: time.Minute})
	id := peer.ID("member")
	m.heartbeat(start, id, heartbeat{Instance: "x", Seq: 1})
	var h localHealth
	h.observe(1, false)
	m.setHealth(h.observe(0, true)) // two unhealthy ticks: stretch 3x
	if trs := m.tick(start.Add(2500 * time.Millisecond)); len(trs) != 0 {
		t.Errorf("tick at 2.5 s with stretch 3 = %v; want no change (suspect after 3 s)", trs)
	}
	if trs := m.tick(start.Add(3500 * time.Millisecond)); len(trs) != 1 || trs[0].to != StateSuspect {
		t.Errorf("tick at 3.5 s = %v; want suspect", trs)
	}
	m.setHealth(h.observe(0, false))
	m.setHealth(h.observe(0, false)) // healthy again
	if trs := m.tick(start.Add(2500 * time.Millisecond)); len(trs) != 1 || trs[0].to != StateDead {
		t.Errorf("tick at 2.5 s once healthy = %v; want dead", trs)
	}
}

func TestLocalHealthScoreIsBounded(t *testing.T) {
	var h localHealth
	if got := h.observe(4, false); got != 4 {
		t.Errorf("score after a tick four intervals late = %d; want 4", got)
	}
	for range 20 {
		h.observe(1, true)
	}
	if h.score != maxHealthScore {
		t.Errorf("score after 20 bad ticks = %d; want %d", h.score, maxHealthScore)
	}
	for range 20 {
		h.observe(0, false)
	}
	if h.score != 0 {
		t.Errorf("score after 20 good ticks = %d; want 0", h.score)
	}
}

func TestLagIsMeasuredAgainstEachMembersUsualDelay(t *testing.T) {
	start := time.Unix(1000, 0)
	m := newMembership(timing{suspectAfter: time.Second, deadAfter: 2 * time.Second, forgetAfter: time.Minute})
	skewed, near := peer.ID("skewed"), peer.ID("near")
	sent := func(at time.Time) int64 { return at.UnixMilli() }
	// "skewed" runs 5 s behind; both arrive 10 ms after sending.
	m.heartbeat(start, skewed, heartbeat{Instance: "a", Seq: 1, SentMs: sent(start.Add(-5 * time.Second))})
	m.heartbeat(start, near, heartbeat{Instance: "b", Seq: 1, SentMs: sent(start.Add(-10 * time.Millisecond))})
	if lag := m.takeLag(); lag != 0 {
		t.Errorf("lag after first beats = %v; want 0 (skew is not lag)", lag)
	}
	// Next beats: skewed's arrives as usual, near's 3 s late.
	now := start.Add(time.Second)
	m.heartbeat(now, skewed, heartbeat{Instance: "a", Seq: 2, SentMs: sent(now.Add(-5 * time.Second))})
	m.heartbeat(now.Add(3*time.Second), near, heartbeat{Instance: "b", Seq: 2, SentMs: sent(now.Add(-10 * time.Millisecond))})
	if lag := m.takeLag(); lag < 2900*time.Millisecond || lag > 3100*time.Millisecond {
		t.Errorf("lag = %v; want about 3 s", lag)
	}
	if lag := m.takeLag(); lag != 0 {
		t.Errorf("lag after takeLag = %v; want 0", lag)
	}
}
