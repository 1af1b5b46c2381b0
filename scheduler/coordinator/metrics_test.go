package coordinator_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
	"github.com/shoalmesh/shoal/scheduler/coordinator/coordinatortest"
)

// countingMetrics records what a coordinator reports.
type countingMetrics struct {
	placed  map[string]int
	refused map[string]int
}

func (m *countingMetrics) Placed(policy string, n int) { m.placed[policy] += n }
func (m *countingMetrics) Refused(reason string)       { m.refused[reason]++ }

// TestMetricsCountPlacementsAndRefusals: replicas committed are counted
// under the policy that placed them; a request no card can hold counts the
// scheduler's reason, and a reservation a node's ledger refuses (the
// coordinator planned from a stale view) counts the node's resource.
func TestMetricsCountPlacementsAndRefusals(t *testing.T) {
	cl := coordinatortest.New([]scheduler.Node{gpuNode("a", 24), gpuNode("b", 24)}, t0)
	met := &countingMetrics{placed: map[string]int{}, refused: map[string]int{}}
	m := newMemberWith(t, cl, coordinator.Config{Self: "a", Metrics: met})
	ids := []string{"a", "b"}
	m.submit(ownedBy("a", ids, "three"), scheduler.Request{GPUs: 1, MilliGPU: 500, Replicas: 3})
	m.submit(ownedBy("a", ids, "huge"), scheduler.Request{GPUs: 1, MinVRAM: 100 * gib})
	m.step(cl)
	if want := map[string]int{string(scheduler.FGD): 3}; !reflect.DeepEqual(met.placed, want) {
		t.Errorf("placed = %v; want %v", met.placed, want)
	}
	if want := map[string]int{string(scheduler.ReasonMinVRAM): 1}; !reflect.DeepEqual(met.refused, want) {
		t.Errorf("refused = %v; want %v", met.refused, want)
	}

	// A node refuses the next reservation (its ledger changed between the
	// coordinator's look and its call): counted as the node's resource.
	tr := &refuseOnce{Transport: cl.Transport("a")}
	c, err := coordinator.New(coordinator.Config{Self: "a", Metrics: met}, cl.View("a"), tr)
	if err != nil {
		t.Fatal(err)
	}
	m.c = c
	m.submit(ownedBy("a", ids, "one-more"), scheduler.Request{GPUs: 1, MilliGPU: 500})
	m.step(cl)
	if met.refused["node: gpu"] != 1 {
		t.Errorf("refused = %v; want one refusal by a node (node: gpu)", met.refused)
	}
	if met.placed[string(scheduler.FGD)] != 4 {
		t.Errorf("placed = %v; want 4 (the refused replica placed on the next try)", met.placed)
	}
}

// refuseOnce refuses the first reservation it carries, as a node whose
// card was just taken by another coordinator does.
type refuseOnce struct {
	coordinator.Transport
	done bool
}

func (r *refuseOnce) Call(ctx context.Context, to string, call coordinator.Call) (coordinator.Answer, error) {
	if call.Op == coordinator.OpReserve && !r.done {
		r.done = true
		return coordinator.Answer{Refused: &coordinator.Refused{Resource: "gpu", Want: 500}}, nil
	}
	return r.Transport.Call(ctx, to, call)
}

// ownedBy is the first deployment ID with prefix that self owns among ids.
func ownedBy(self string, ids []string, prefix string) string {
	for i := 0; ; i++ {
		if id := fmt.Sprintf("%s-%d", prefix, i); coordinator.Owner(id, ids) == self {
			return id
		}
	}
}
