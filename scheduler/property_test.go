package scheduler_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/schedulertest"
)

var models = []string{"T4", "A10", "A100"}

func randomNodes(rng *rand.Rand, n int) []scheduler.Node {
	out := make([]scheduler.Node, n)
	for i := range out {
		nd := node(fmt.Sprintf("n%02d", i), models[rng.IntN(len(models))], []int{0, 1, 2, 4, 8}[rng.IntN(5)],
			int64(4000+rng.IntN(60000)), uint64(8+rng.IntN(120)))
		for g := range nd.GPUs {
			nd.GPUs[g].FreeMilli = []int{1000, 1000, 500, 0}[rng.IntN(4)]
			nd.GPUs[g].VRAM = 24 * gib
			nd.GPUs[g].FreeVRAM = uint64(rng.IntN(25)) * gib
		}
		if rng.IntN(3) == 0 {
			nd = schedulertest.NVLinkAll(nd)
		}
		out[i] = nd
	}
	return out
}

func randomRequest(rng *rand.Rand, i int) scheduler.Request {
	r := scheduler.Request{ID: fmt.Sprintf("r%d", i), CPUMilli: int64(rng.IntN(8000)), MemoryBytes: uint64(rng.IntN(16)) * gib}
	switch rng.IntN(5) {
	case 0:
		r.CPUMilli++ // CPU only
	case 1:
		r.GPUs, r.MilliGPU = 1, 50+rng.IntN(950)
	case 2:
		r.GPUs, r.VRAM = 1, uint64(1+rng.IntN(12))*gib
	default:
		r.GPUs = []int{1, 2, 4}[rng.IntN(3)]
	}
	if r.GPUs > 0 && rng.IntN(4) == 0 {
		r.Models = []string{models[rng.IntN(len(models))]}
	}
	r.Replicas = 1 + rng.IntN(2)
	r.Gang = rng.IntN(2) == 0
	r.CrossNode = rng.IntN(4) == 0
	return r
}

// TestPropertyNoNodeOversold places random requests on random pools with
// every policy and checks that no plan exceeds a node's capacity, that every
// slot honours the request, and that Commit accounts exactly.
func TestPropertyNoNodeOversold(t *testing.T) {
	for seed := range uint64(40) {
		for _, pol := range scheduler.Policies() {
			rng := rand.New(rand.NewPCG(seed, 1))
			nodes := randomNodes(rng, 1+rng.IntN(12))
			pool, err := scheduler.NewPool(nodes, scheduler.Config{Policy: pol, Seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 60 {
				req := randomRequest(rng, i)
				pool.Observe(req)
				before := pool.Nodes()
				plan, err := pool.Place(req)
				if !reflect.DeepEqual(pool.Nodes(), before) {
					t.Fatalf("seed %d %s: Place(%+v) changed the pool", seed, pol, req)
				}
				if err != nil && !errors.Is(err, scheduler.ErrNoFit) && !errors.Is(err, scheduler.ErrNeverFits) {
					t.Fatalf("seed %d %s: Place(%+v) = %v", seed, pol, req, err)
				}
				if err != nil && !errors.Is(err, scheduler.ErrPartial) {
					continue
				}
				checkPlan(t, before, req, plan)
				if err := pool.Commit(plan); err != nil {
					t.Fatalf("seed %d %s: Commit(%+v) = %v; want the plan Place made to apply", seed, pol, plan, err)
				}
				checkCapacity(t, pool.Nodes())
			}
		}
	}
}

func checkPlan(t *testing.T, nodes []scheduler.Node, req scheduler.Request, plan scheduler.Plan) {
	t.Helper()
	byID := map[string]scheduler.Node{}
	for _, n := range nodes {
		byID[n.ID] = n
	}
	want := max(1, req.Replicas)
	if req.Gang && len(plan.Replicas) != want {
		t.Fatalf("gang %s: %d replicas; want %d", req.ID, len(plan.Replicas), want)
	}
	for _, rep := range plan.Replicas {
		gpus := 0
		for _, s := range rep.Slots {
			n, ok := byID[s.Node]
			if !ok {
				t.Fatalf("%s: slot on unknown node %s", req.ID, s.Node)
			}
			seen := map[int]bool{}
			for _, g := range s.GPUs {
				if seen[g.Index] {
					t.Fatalf("%s: GPU %d of %s twice in one slot", req.ID, g.Index, s.Node)
				}
				seen[g.Index] = true
				if len(req.Models) > 0 && !slices.Contains(req.Models, n.GPUs[g.Index].Model) {
					t.Fatalf("%s: GPU model %s not in %v", req.ID, n.GPUs[g.Index].Model, req.Models)
				}
				if req.MilliGPU > 0 && g.Milli != req.MilliGPU {
					t.Fatalf("%s: share %d; want %d", req.ID, g.Milli, req.MilliGPU)
				}
				if g.UUID != n.GPUs[g.Index].UUID {
					t.Fatalf("%s: UUID %s for GPU %d; want %s", req.ID, g.UUID, g.Index, n.GPUs[g.Index].UUID)
				}
			}
			gpus += len(s.GPUs)
		}
		if gpus != req.GPUs {
			t.Fatalf("%s: replica with %d GPUs; want %d", req.ID, gpus, req.GPUs)
		}
		if len(rep.Slots) > 1 && !req.CrossNode {
			t.Fatalf("%s: replica spans %d nodes without CrossNode", req.ID, len(rep.Slots))
		}
	}
}

func checkCapacity(t *testing.T, nodes []scheduler.Node) {
	t.Helper()
	for _, n := range nodes {
		if n.CPUMilli < 0 {
			t.Fatalf("node %s: CPU %d below zero", n.ID, n.CPUMilli)
		}
		for i, g := range n.GPUs {
			if g.FreeMilli < 0 || g.FreeMilli > scheduler.MilliPerGPU || g.FreeVRAM > g.VRAM {
				t.Fatalf("node %s GPU %d: free %d milli, %d of %d bytes; oversold", n.ID, i, g.FreeMilli, g.FreeVRAM, g.VRAM)
			}
		}
	}
}

// TestPropertyCachedEqualsFresh checks the fast path against the naive one:
// a long-lived pool, whose FGD scores are cached per node, decides exactly
// as a pool built afresh from the same snapshot and workload.
func TestPropertyCachedEqualsFresh(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 2))
		nodes := randomNodes(rng, 2+rng.IntN(10))
		w := scheduler.NewWorkload()
		cfg := scheduler.Config{Workload: w, RelearnGrowth: -1}
		pool, err := scheduler.NewPool(nodes, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 80 {
			req := randomRequest(rng, i)
			req.Replicas, req.CrossNode = 1, false
			w.Observe(req)
			fresh, err := scheduler.NewPool(pool.Nodes(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, gerr := pool.Place(req)
			want, werr := fresh.Place(req)
			if !reflect.DeepEqual(got, want) || (gerr == nil) != (werr == nil) {
				t.Fatalf("seed %d request %d: cached pool placed %v (%v); fresh pool %v (%v)", seed, i, placed(got), gerr, placed(want), werr)
			}
			if gerr == nil {
				if err := pool.Commit(got); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}
