package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
	"github.com/shoalmesh/shoal/scheduler/coordinator/coordinatortest"
)

// A replica whose node released it (it failed there) is placed again on
// another node while the caller avoids the first, and on the first again
// once it no longer does; with every node avoided it waits.
func TestAvoidedNodesGetNoNewReplica(t *testing.T) {
	ids := []string{"a", "b"}
	cl := coordinatortest.New([]scheduler.Node{gpuNode("a", 24), gpuNode("b", 24)}, t0)
	m := ownerOf("svc", []*member{newMember(t, cl, "a"), newMember(t, cl, "b")})
	m.submit("svc", scheduler.Request{GPUs: 1})
	m.step(cl)
	where := func() string {
		for _, id := range ids {
			for _, r := range cl.Ledger(id) {
				if r.Deployment == "svc" && r.State == "committed" {
					return id
				}
			}
		}
		return ""
	}
	first := where()
	if first == "" {
		t.Fatal("svc not placed")
	}
	other := map[string]string{"a": "b", "b": "a"}[first]
	// The node releases the failed replica; the coordinator learns it at
	// its next resync.
	var resID string
	for _, r := range cl.Ledger(first) {
		resID = r.ID
	}
	if _, err := cl.Transport(first).Call(context.Background(), first, coordinator.Call{Op: coordinator.OpRelease, IDs: []string{resID}}); err != nil {
		t.Fatal(err)
	}
	step := func(avoid ...string) coordinator.Status {
		cl.Advance(coordinator.DefaultResyncEvery + time.Second)
		recs := m.store.List()
		recs[0].Spec.Avoid = avoid
		var st coordinator.Status
		for _, u := range m.c.Step(context.Background(), cl.Now(), recs) {
			m.store.SetStatus(u.ID, u.Status)
			st = u.Status
		}
		return st
	}
	step(first)
	if got := where(); got != other {
		t.Fatalf("replaced on %q while %s is avoided; want %s", got, first, other)
	}
	if _, ok := m.store.Get("svc"); !ok {
		t.Fatal("record gone")
	}
	if r, _ := m.store.Get("svc"); r.Spec.Avoid != nil {
		t.Errorf("Avoid stored in the record: %v", r.Spec.Avoid)
	}
	// Release it there too and avoid both: nothing is placed.
	for _, r := range cl.Ledger(other) {
		resID = r.ID
	}
	if _, err := cl.Transport(other).Call(context.Background(), other, coordinator.Call{Op: coordinator.OpRelease, IDs: []string{resID}}); err != nil {
		t.Fatal(err)
	}
	if st := step("a", "b"); st.State != coordinator.StateQueued || where() != "" {
		t.Fatalf("with every node avoided: state %s, placed on %q; want queued and nowhere", st.State, where())
	}
	// Avoiding nothing: placed again.
	if st := step(); st.State != coordinator.StatePlaced || where() == "" {
		t.Fatalf("avoiding nothing: state %s, placed on %q; want placed", st.State, where())
	}
	if err := cl.Oversold(); err != nil {
		t.Fatal(err)
	}
}
