package node

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

type noMembers struct{}

func (noMembers) Members() []mesh.Member { return nil }

const slowTemplate = `apiVersion: shoal/v1
kind: Template
metadata:
  name: slow
spec:
  kind: service
  runtime:
    command: [slow]
    port: 8000
  scaling:
    minReplicas: 1
    maxReplicas: 3
    targetConcurrency: 2
    window: 10s
`

// The autoscaler of a deployment, stepped on a fake clock: a burst panics
// it up to maxReplicas at once; the count holds while the load does and
// falls back to minReplicas a window after it stops; every change is
// written into the record, as `shoal scale` writes it.
func TestAutoscaleWritesTheCount(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &deployService{self: "a", store: coordinator.NewStore("a"), cfg: deployConfig{Members: noMembers{}, Version: "dev"}}
	s.store.Put("slow", coordinator.Spec{Name: "slow", Source: slowTemplate, Template: "slow", Request: schedulerRequest(1)})
	var conc float64
	ready := 1
	sc := newScaling(s, defaultFailurePolicy(), func(string) (float64, int) { return conc, ready }, log)
	t0 := time.Unix(1_800_000_000, 0)
	count := func() int { r, _ := s.store.Get("slow"); return r.Spec.Request.Replicas }
	step := func(at time.Duration) {
		r, _ := s.store.Get("slow")
		sc.autoscale(&r, t0.Add(at))
	}
	tests := []struct {
		from, to time.Duration
		conc     float64
		want     int
	}{
		{0, 3 * time.Second, 1, 1},                // 1 in flight, target 2: one replica
		{3 * time.Second, 4 * time.Second, 7, 3},  // a burst: panic, straight to the bound (7/2 → 4 → 3)
		{4 * time.Second, 8 * time.Second, 5, 3},  // load holds
		{8 * time.Second, 12 * time.Second, 0, 3}, // stopped: panic holds the count for a window
		{12 * time.Second, 30 * time.Second, 0, 1},
	}
	for _, tt := range tests {
		conc = tt.conc
		for at := tt.from; at < tt.to; at += 250 * time.Millisecond {
			step(at)
			ready = count()
		}
		if got := count(); got != tt.want {
			t.Errorf("after %v at concurrency %v: %d replicas; want %d", tt.to, tt.conc, got, tt.want)
		}
	}
	// A gang or a service without room between its bounds is left alone.
	s.store.Put("fixed", coordinator.Spec{Name: "fixed", Source: slowTemplate, Template: "slow", Request: schedulerRequest(2)})
	r, _ := s.store.Get("fixed")
	r.Spec.Request.Gang = true
	conc = 100
	sc.autoscale(&r, t0.Add(time.Minute))
	if r2, _ := s.store.Get("fixed"); r2.Spec.Request.Replicas != 2 {
		t.Errorf("a gang was autoscaled to %d", r2.Spec.Request.Replicas)
	}
}

// Failed replicas reach the step: the nodes in backoff are avoided, and
// once it failed MaxFailures times the deployment asks for nothing and
// its status says why.
func TestScalingShapesTheStep(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &deployService{self: "a", store: coordinator.NewStore("a"), cfg: deployConfig{Members: noMembers{}, Version: "dev"}, poke: make(chan struct{}, 1), view: meshView{members: noMembers{}}}
	t0 := time.Unix(1_800_000_000, 0)
	s.store.Put("svc", coordinator.Spec{Name: "svc", Source: slowTemplate, Template: "slow", Request: schedulerRequest(1), Updated: t0})
	sc := newScaling(s, defaultFailurePolicy(), func(string) (float64, int) { return 0, 0 }, log)
	sc.noteFailure(replicaFailure{Deployment: "svc", Node: "n1", Reservation: "r1", Reason: "boom", At: t0.Add(time.Second)})
	recs := s.store.List()
	sc.before(recs, t0.Add(2*time.Second))
	if len(recs[0].Spec.Avoid) != 1 || recs[0].Spec.Avoid[0] != "n1" {
		t.Errorf("Avoid = %v; want [n1]", recs[0].Spec.Avoid)
	}
	ups := []coordinator.Update{{ID: "svc", Status: coordinator.Status{State: coordinator.StateQueued, Reason: "no node fits"}}}
	sc.after(ups, t0.Add(2*time.Second))
	if ups[0].Status.Reason == "no node fits" {
		t.Errorf("queued while backing off says %q; want the failure", ups[0].Status.Reason)
	}
	sc.noteFailure(replicaFailure{Deployment: "svc", Node: "n2", Reservation: "r2", Reason: "boom", At: t0.Add(3 * time.Second)})
	sc.noteFailure(replicaFailure{Deployment: "svc", Node: "n1", Reservation: "r3", Reason: "boom", At: t0.Add(4 * time.Second)})
	recs = s.store.List()
	sc.before(recs, t0.Add(5*time.Second))
	if recs[0].Spec.Desired() != 0 {
		t.Errorf("after 3 failures Desired() = %d; want 0", recs[0].Spec.Desired())
	}
	ups = []coordinator.Update{{ID: "svc", Status: coordinator.Status{State: coordinator.StatePlaced}}}
	sc.after(ups, t0.Add(5*time.Second))
	if ups[0].Status.State != coordinator.StateFailed {
		t.Errorf("after 3 failures state %q; want failed", ups[0].Status.State)
	}
}

func schedulerRequest(n int) scheduler.Request { return scheduler.Request{Replicas: n, CPUMilli: 100} }
