package mesh_test

import (
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// A node's announced free capacity reaches the other members' view of its
// record, and a change replaces it.
func TestSetFreeReachesMembers(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	for _, n := range nodes {
		meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) })
	}
	freeOn := func(from *mesh.Node) *mesh.FreeCapacity {
		for _, m := range from.Members() {
			if m.PeerID == nodes[0].ID() && m.Record != nil {
				return m.Record.Free
			}
		}
		return nil
	}
	for _, milli := range []int64{750, 250} {
		nodes[0].SetFree(mesh.FreeCapacity{GPUs: []mesh.FreeGPU{{UUID: "GPU-n00", Milli: milli, VRAMBytes: 6 << 30}}, CPUMilli: 1000})
		for i, n := range nodes[1:] {
			ok := meshtest.Eventually(5*time.Second, func() bool {
				f := freeOn(n)
				return f != nil && len(f.GPUs) == 1 && f.GPUs[0].Milli == milli
			})
			if !ok {
				t.Fatalf("member %d sees node 0's free capacity %+v; want %d milli", i+1, freeOn(n), milli)
			}
		}
	}
	// Bounded: at most MaxFreeGPUs entries travel.
	many := make([]mesh.FreeGPU, mesh.MaxFreeGPUs+10)
	for i := range many {
		many[i] = mesh.FreeGPU{UUID: "g", Milli: 1}
	}
	nodes[0].SetFree(mesh.FreeCapacity{GPUs: many})
	if f := freeOn(nodes[0]); f == nil || len(f.GPUs) != mesh.MaxFreeGPUs {
		t.Errorf("self announces %d GPUs; want %d", len(f.GPUs), mesh.MaxFreeGPUs)
	}
}
