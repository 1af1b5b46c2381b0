package runtime_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/runtime"
)

// instantClock fires every After at once and records the waits asked for;
// Now advances by each wait, as if it had passed.
type instantClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (c *instantClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *instantClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func TestSupervisorCrashLoopBacksOffThenFails(t *testing.T) {
	dir := t.TempDir()
	p := newProcess(t, dir, "node-a")
	clock := &instantClock{now: time.Unix(1e9, 0)}
	s := runtime.Spec{ReplicaID: "crashy", Command: []string{"sh", "-c", "echo boom >&2; exit 3"}, StartTimeout: 5 * time.Second}
	sup := runtime.NewSupervisor(p, s, runtime.SupervisorConfig{MaxRestarts: 4, BackoffFirst: time.Second, BackoffMax: 5 * time.Second, Clock: clock})
	err := sup.Run(context.Background())
	if !errors.Is(err, runtime.ErrCrashLoop) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Run = %v; want ErrCrashLoop quoting the output", err)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
	if !slices.Equal(clock.waits, want) {
		t.Fatalf("backoff waits = %v; want %v", clock.waits, want)
	}
	st := sup.Status()
	if st.Phase != runtime.PhaseFailed || st.Restarts != 5 || !strings.Contains(st.LastErr, "status 3") {
		t.Fatalf("Status = %+v; want failed after 5 crashes", st)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("left behind %v", left)
	}
}

func TestSupervisorRestartsAfterCrashAndStopsOnCancel(t *testing.T) {
	dir := t.TempDir()
	p := newProcess(t, dir, "node-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup := runtime.NewSupervisor(p, referenceSpec("sup-ref"), runtime.SupervisorConfig{BackoffFirst: 10 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	eventually(t, 10*time.Second, "ready", func() bool { return sup.Status().Phase == runtime.PhaseReady })
	first := sup.Status().Replica.Ref
	// Kill it behind the supervisor's back: it comes back.
	if err := p.Stop(ctx, "sup-ref", time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "restarted", func() bool {
		st := sup.Status()
		return st.Phase == runtime.PhaseReady && st.Replica.Ref != first && st.Restarts == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v; want nil", err)
	}
	if st := sup.Status(); st.Phase != runtime.PhaseStopped {
		t.Fatalf("Status = %+v; want stopped", st)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("left behind %v", left)
	}
}

// A restarted daemon hands the supervisor the replica its predecessor
// left running: Run takes it over without a restart, and it carries the
// labels the spec added.
func TestSupervisorAdoptsARunningReplica(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := referenceSpec("sup-adopt")
	s.Labels = map[string]string{runtime.LabelReservation: "res-1", runtime.LabelOwner: "not-me"}
	left, err := runtime.StartHealthy(ctx, newProcess(t, dir, "node-a"), s)
	if err != nil {
		t.Fatal(err)
	}
	if left.Labels[runtime.LabelReservation] != "res-1" || left.Labels[runtime.LabelOwner] != "node-a" {
		t.Fatalf("labels %v; want the reservation from Spec.Labels and the backend's own owner", left.Labels)
	}
	p := newProcess(t, dir, "node-a") // the restarted daemon's backend
	list, err := p.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %+v, %v; want the replica left running", list, err)
	}
	sup := runtime.NewSupervisor(p, s, runtime.SupervisorConfig{})
	sup.Adopt(list[0])
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	eventually(t, 10*time.Second, "ready", func() bool { return sup.Status().Phase == runtime.PhaseReady })
	if st := sup.Status(); !st.Adopted || st.Replica.Ref != left.Ref || st.Replica.Endpoint != left.Endpoint {
		t.Fatalf("Status = %+v; want adopted pid %s at %s", st, left.Ref, left.Endpoint)
	}
	if got := modelsID(t, left.Endpoint); got != "my-deployment" {
		t.Fatalf("/v1/models of the adopted replica = %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v; want nil", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("left behind %v", left)
	}
}

// An adopted replica that no longer answers is replaced, not kept.
func TestSupervisorReplacesAnAdoptedReplicaThatIsGone(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newProcess(t, dir, "node-a")
	s := referenceSpec("sup-adopt-gone")
	left, err := runtime.StartHealthy(ctx, p, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx, s.ReplicaID, time.Second); err != nil {
		t.Fatal(err)
	}
	sup := runtime.NewSupervisor(p, s, runtime.SupervisorConfig{})
	sup.Adopt(left)
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	eventually(t, 10*time.Second, "ready", func() bool { return sup.Status().Phase == runtime.PhaseReady })
	if st := sup.Status(); st.Adopted || st.Replica.Ref == left.Ref || st.Restarts != 0 {
		t.Fatalf("Status = %+v; want a fresh replica (not pid %s), no restart counted", st, left.Ref)
	}
	cancel()
	<-done
}
