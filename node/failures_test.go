package node

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFailureBookBacksOffPerNodeAndGivesUp(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	b := newFailureBook(failurePolicy{BackoffFirst: 2 * time.Second, BackoffMax: 10 * time.Second, MaxFailures: 3, Memory: time.Minute})
	fail := func(node, res string, at time.Time) bool {
		return b.note(replicaFailure{Deployment: "svc", Node: node, Reservation: res, Reason: "exited with status 3: boom", At: at})
	}
	if !fail("a", "r1", t0) || fail("a", "r1", t0.Add(time.Second)) {
		t.Fatal("note: a new failure is new once, and a repeated report of it is not")
	}
	steps := []struct {
		at        time.Duration
		note      string // node that fails at this time ("" none)
		wantAvoid []string
		wantFail  bool
	}{
		{at: time.Second, wantAvoid: []string{"a"}},
		{at: 2 * time.Second, wantAvoid: nil},                      // a's first backoff is over
		{at: 3 * time.Second, note: "b", wantAvoid: []string{"b"}}, // moved to b, failed there
		{at: 4 * time.Second, note: "a", wantAvoid: []string{"a", "b"}, wantFail: true},
	}
	res := 1
	for _, s := range steps {
		now := t0.Add(s.at)
		if s.note != "" {
			res++
			fail(s.note, "r"+string(rune('0'+res)), now)
		}
		v := b.verdict("svc", now)
		if !slices.Equal(v.Avoid, s.wantAvoid) || v.Failed != s.wantFail {
			t.Errorf("verdict at +%v = avoid %v failed %v; want avoid %v failed %v", s.at, v.Avoid, v.Failed, s.wantAvoid, s.wantFail)
		}
	}
	v := b.verdict("svc", t0.Add(4*time.Second))
	if r := v.Reason(); !strings.Contains(r, "failed 3 times") || !strings.Contains(r, "boom") {
		t.Errorf("Reason() = %q; want the count and the last reason", r)
	}
	// A second failure on a node doubles its backoff: a failed at +4 s
	// after failing at +0 s waits 4 s.
	if v := b.verdict("svc", t0.Add(7*time.Second)); !slices.Contains(v.Avoid, "a") {
		t.Errorf("at +7 s avoid = %v; want a still backing off (second failure there)", v.Avoid)
	}
	// Deployed anew: earlier failures no longer count.
	b.reset("svc", t0.Add(5*time.Second))
	if v := b.verdict("svc", t0.Add(6*time.Second)); v.Failed || v.Count != 0 || len(v.Avoid) != 0 {
		t.Errorf("after reset: %+v; want nothing counted", v)
	}
	// Past Memory everything is forgotten.
	if v := b.verdict("svc", t0.Add(2*time.Minute)); v.Count != 0 || len(b.seen) != 0 {
		t.Errorf("after Memory: count %d, %d seen; want 0 and 0", v.Count, len(b.seen))
	}
}

func TestFailureReason(t *testing.T) {
	tests := []struct{ in, want string }{
		{"runtime: replica exited", "runtime: replica exited"},
		{"runtime: replica keeps crashing: x failed 4 times in a row: runtime: replica exited: x exited with status 3; its output ends:\nstarting\nno config at /etc/x\n\n",
			"runtime: replica keeps crashing: x failed 4 times in a row: runtime: replica exited: x exited with status 3: no config at /etc/x"},
	}
	for _, tt := range tests {
		if got := failureReason(tt.in); got != tt.want {
			t.Errorf("failureReason(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
