package scheduler_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/schedulertest"
)

const gib = schedulertest.GiB

var node = schedulertest.GPUNode

// placed returns "node:gpu,gpu" per slot of the plan's replicas.
func placed(p scheduler.Plan) []string {
	var out []string
	for _, r := range p.Replicas {
		for _, s := range r.Slots {
			g := make([]string, len(s.GPUs))
			for i, x := range s.GPUs {
				g[i] = string(rune('0' + x.Index))
			}
			out = append(out, s.Node+":"+strings.Join(g, ","))
		}
	}
	return out
}

// withFree sets the free share of node's cards.
func withFree(n scheduler.Node, free ...int) scheduler.Node {
	n.GPUs = append([]scheduler.GPU(nil), n.GPUs...)
	for i, f := range free {
		n.GPUs[i].FreeMilli = f
	}
	return n
}

func TestFeasibilityReasons(t *testing.T) {
	a10 := node("a", "A10", 2, 16000, 64)
	a10.GPUs[0].Arch, a10.GPUs[1].Arch = "ampere", "ampere"
	a10.GPUs[0].Compute = scheduler.ComputeCapability{Major: 8, Minor: 6}
	a10.GPUs[1].Compute = a10.GPUs[0].Compute
	a10.GPUs[0].VRAM, a10.GPUs[1].VRAM = 24*gib, 24*gib
	a10.GPUs[0].FreeVRAM, a10.GPUs[1].FreeVRAM = 24*gib, 4*gib
	a10.PricePerGPUHour = 2
	a10.DiskBytes = 10 * gib
	busy := a10
	busy.CPUCapacity = 16000
	busy.CPUMilli = 1000
	tests := []struct {
		name  string
		n     scheduler.Node
		req   scheduler.Request
		want  scheduler.Reason
		never bool
	}{
		{"price", a10, scheduler.Request{GPUs: 1, MaxPrice: 1}, scheduler.ReasonPrice, true},
		{"count", a10, scheduler.Request{GPUs: 4}, scheduler.ReasonGPUCount, true},
		{"model", a10, scheduler.Request{GPUs: 1, Models: []string{"H100"}}, scheduler.ReasonGPUModel, true},
		{"arch", a10, scheduler.Request{GPUs: 1, Archs: []string{"hopper"}}, scheduler.ReasonGPUArch, true},
		{"compute", a10, scheduler.Request{GPUs: 1, MinCompute: scheduler.ComputeCapability{Major: 9}}, scheduler.ReasonCompute, true},
		{"min vram", a10, scheduler.Request{GPUs: 1, MinVRAM: 40 * gib}, scheduler.ReasonMinVRAM, true},
		{"cpu never", a10, scheduler.Request{GPUs: 1, CPUMilli: 32000}, scheduler.ReasonCPU, true},
		{"cpu now", busy, scheduler.Request{GPUs: 1, CPUMilli: 8000}, scheduler.ReasonCPU, false},
		{"memory", a10, scheduler.Request{GPUs: 1, MemoryBytes: 128 * gib}, scheduler.ReasonMemory, true},
		{"disk", a10, scheduler.Request{GPUs: 1, DiskBytes: 20 * gib, ModelID: "m"}, scheduler.ReasonDisk, true},
		{"gpu share now", withFree(a10, 300, 200), scheduler.Request{GPUs: 1, MilliGPU: 500}, scheduler.ReasonGPUFree, false},
		{"vram now", a10, scheduler.Request{GPUs: 2, VRAM: 8 * gib}, scheduler.ReasonVRAMFree, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.ID = tt.name
			_, err := scheduler.Place([]scheduler.Node{tt.n}, tt.req, scheduler.Config{})
			var ref *scheduler.Refusal
			if !errors.As(err, &ref) {
				t.Fatalf("Place(%s) = %v; want a *Refusal", tt.name, err)
			}
			if ref.Reason != tt.want || ref.Never != tt.never || ref.Closest != "a" {
				t.Errorf("Place(%s) refused (%q, never %v, closest %q); want (%q, never %v, closest a)",
					tt.name, ref.Reason, ref.Never, ref.Closest, tt.want, tt.never)
			}
			wantErr := scheduler.ErrNoFit
			if tt.never {
				wantErr = scheduler.ErrNeverFits
			}
			if !errors.Is(err, wantErr) {
				t.Errorf("Place(%s) = %v; want errors.Is %v", tt.name, err, wantErr)
			}
			if ref.Lacked == "" || !strings.Contains(err.Error(), "closest node a") {
				t.Errorf("Place(%s) error %q; want it to name the closest node and what it lacked", tt.name, err)
			}
		})
	}
}

func TestClosestNodeIsTheOneThatGotFurthest(t *testing.T) {
	nodes := []scheduler.Node{
		node("small", "T4", 1, 64000, 64),   // too few GPUs
		node("weak", "T4", 4, 2000, 64),     // too little CPU
		node("close", "T4", 4, 64000, 64),   // passes host checks, GPUs busy
		node("wrong", "P100", 4, 64000, 64), // wrong model
	}
	nodes[2] = withFree(nodes[2], 1000, 1000, 0, 0)
	_, err := scheduler.Place(nodes, scheduler.Request{ID: "r", GPUs: 4, CPUMilli: 8000, Models: []string{"T4"}}, scheduler.Config{})
	var ref *scheduler.Refusal
	if !errors.As(err, &ref) || ref.Never || ref.Closest != "close" || ref.Reason != scheduler.ReasonGPUFree {
		t.Fatalf("Place = %v; want not-now refusal with closest node close, reason %q", err, scheduler.ReasonGPUFree)
	}
	want := map[scheduler.Reason]int{scheduler.ReasonGPUCount: 1, scheduler.ReasonCPU: 1, scheduler.ReasonGPUFree: 1, scheduler.ReasonGPUModel: 1}
	if !reflect.DeepEqual(ref.Filtered, want) {
		t.Errorf("Filtered = %v; want %v", ref.Filtered, want)
	}
}

// TestClosestOfEquallyStoppedNodesIsTheLargest: when every node fails at the
// same filter, the refusal names the biggest machine, not the first listed.
func TestClosestOfEquallyStoppedNodesIsTheLargest(t *testing.T) {
	withVRAM := func(n scheduler.Node, gib uint64) scheduler.Node {
		for i := range n.GPUs {
			n.GPUs[i].VRAM, n.GPUs[i].FreeVRAM = gib<<30, gib<<30
		}
		return n
	}
	nodes := []scheduler.Node{
		withVRAM(node("laptop", "RTX 4060", 1, 8000, 16), 8),
		withVRAM(node("server", "A100", 1, 64000, 256), 80),
		withVRAM(node("desktop", "RTX 4090", 1, 16000, 64), 24),
	}
	_, err := scheduler.Place(nodes, scheduler.Request{ID: "big", GPUs: 1, MinVRAM: 100 << 30}, scheduler.Config{})
	var ref *scheduler.Refusal
	if !errors.As(err, &ref) || !ref.Never || ref.Reason != scheduler.ReasonMinVRAM || ref.Closest != "server" {
		t.Fatalf("Place(100 GiB) = %v; want never, %q, closest server", err, scheduler.ReasonMinVRAM)
	}
}

func TestPolicies(t *testing.T) {
	// "loose" has more left over than "tight"; first-fit takes "loose", the
	// first in order.
	nodes := []scheduler.Node{
		node("loose", "T4", 4, 64000, 64),
		withFree(node("tight", "T4", 4, 64000, 64), 1000, 0, 0, 0),
	}
	req := scheduler.Request{ID: "r", GPUs: 1}
	tests := []struct {
		policy scheduler.Policy
		want   string
	}{
		{scheduler.BestFit, "tight"},
		{scheduler.WorstFit, "loose"},
		{"spread", "loose"},
		{scheduler.FirstFit, "loose"},
		{scheduler.FGD, "tight"},
	}
	for _, tt := range tests {
		plan, err := scheduler.Place(nodes, req, scheduler.Config{Policy: tt.policy})
		if err != nil {
			t.Fatalf("Place(%s): %v", tt.policy, err)
		}
		if got := plan.Nodes(); len(got) != 1 || got[0] != tt.want {
			t.Errorf("Place(%s) = %v; want %s", tt.policy, got, tt.want)
		}
	}
}

func TestRandomPolicyIsSeeded(t *testing.T) {
	var nodes []scheduler.Node
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		nodes = append(nodes, node(id, "T4", 2, 16000, 32))
	}
	draw := func(seed uint64) []string {
		p, err := scheduler.NewPool(nodes, scheduler.Config{Policy: scheduler.Random, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for range 6 {
			plan, err := p.Place(scheduler.Request{ID: "r", GPUs: 1, MilliGPU: 100})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, placed(plan)...)
		}
		return out
	}
	if a, b := draw(7), draw(7); !reflect.DeepEqual(a, b) {
		t.Errorf("seed 7 drew %v then %v; want the same", a, b)
	}
	if a, b := draw(7), draw(8); reflect.DeepEqual(a, b) {
		t.Errorf("seeds 7 and 8 both drew %v; want different draws", a)
	}
}

func TestFGDKeepsWholeGPUsForTheWorkload(t *testing.T) {
	// The workload is mostly whole-GPU requests. A 300-milli request could
	// go on "fresh" (breaking a whole GPU) or on "used" (whose GPU 0 is
	// already shared): FGD takes "used" and keeps "fresh" whole, though
	// "fresh" is the tighter fit by host resources.
	nodes := []scheduler.Node{
		node("fresh", "T4", 1, 8000, 32),
		withFree(node("used", "T4", 2, 64000, 256), 600, 1000),
	}
	w := scheduler.NewWorkload()
	for range 9 {
		w.Observe(scheduler.Request{GPUs: 1, CPUMilli: 4000})
	}
	w.Observe(scheduler.Request{GPUs: 1, MilliGPU: 300, CPUMilli: 1000})
	plan, err := scheduler.Place(nodes, scheduler.Request{ID: "s", GPUs: 1, MilliGPU: 300, CPUMilli: 1000},
		scheduler.Config{Workload: w})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := placed(plan), []string{"used:0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Place(fgd) = %v; want %v", got, want)
	}
	plan, _ = scheduler.Place(nodes, scheduler.Request{ID: "s", GPUs: 1, MilliGPU: 300, CPUMilli: 1000},
		scheduler.Config{Policy: scheduler.BestFit})
	if got, want := placed(plan), []string{"fresh:0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Place(bestfit) = %v; want %v", got, want)
	}
}

func TestFGDSparesScarceModels(t *testing.T) {
	// As many requests may only use V100M32 cards (the pool has two) as may
	// only use G2 cards (it has eight); the rest may go anywhere. An
	// unconstrained whole-GPU request fits best (by host resources) on the
	// small V100M32 box, and fragmentation alone sees no difference (each
	// card is as useless to one constrained group as to the other); the
	// scarcity price sends it to the G2 server, and a request limited to
	// V100M32 still gets one.
	nodes := []scheduler.Node{
		node("rare", "V100M32", 2, 16000, 64),
		node("common", "G2", 8, 96000, 384),
	}
	w := scheduler.NewWorkload()
	for range 4 {
		w.Observe(scheduler.Request{GPUs: 1, CPUMilli: 4000})
	}
	for _, m := range []string{"V100M32", "G2"} {
		w.Observe(scheduler.Request{GPUs: 1, CPUMilli: 4000, Models: []string{m}})
	}
	free := scheduler.Request{ID: "any", GPUs: 1, CPUMilli: 4000}
	tests := []struct {
		name string
		req  scheduler.Request
		cfg  scheduler.Config
		want string
	}{
		{"fgd", free, scheduler.Config{Workload: w}, "common"},
		{"fgd without the price", free, scheduler.Config{Workload: w, ScarcityWeight: -1}, "rare"},
		{"bestfit", free, scheduler.Config{Policy: scheduler.BestFit}, "rare"},
		{"fgd, constrained", scheduler.Request{ID: "v", GPUs: 1, CPUMilli: 4000, Models: []string{"V100M32"}}, scheduler.Config{Workload: w}, "rare"},
	}
	for _, tt := range tests {
		plan, err := scheduler.Place(nodes, tt.req, tt.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := plan.Nodes(); len(got) != 1 || got[0] != tt.want {
			t.Errorf("Place(%s) = %v; want %s", tt.name, got, tt.want)
		}
	}
}

func TestTieBreaks(t *testing.T) {
	cached := node("cached", "T4", 2, 16000, 32)
	cached.Models = []string{"llama"}
	cheap := node("cheap", "T4", 2, 16000, 32)
	cheap.PricePerGPUHour = 0.5
	dear := node("dear", "T4", 2, 16000, 32)
	dear.PricePerGPUHour = 1
	tests := []struct {
		name  string
		nodes []scheduler.Node
		req   scheduler.Request
		want  string
	}{
		{"locality wins over order", []scheduler.Node{dear, cached}, scheduler.Request{GPUs: 1, ModelID: "llama"}, "cached"},
		{"price wins over order", []scheduler.Node{dear, cheap}, scheduler.Request{GPUs: 1}, "cheap"},
		{"locality wins over price", []scheduler.Node{cheap, cached}, scheduler.Request{GPUs: 1, ModelID: "llama"}, "cached"},
		{"price limit filters", []scheduler.Node{cheap, dear}, scheduler.Request{GPUs: 1, MaxPrice: 0.7}, "cheap"},
		{"cached weights need no disk", []scheduler.Node{cheap, cached}, scheduler.Request{GPUs: 1, ModelID: "llama", DiskBytes: gib}, "cached"},
	}
	for _, tt := range tests {
		// First-fit ranks by node order alone: no ties to break.
		for _, pol := range []scheduler.Policy{scheduler.FGD, scheduler.BestFit, scheduler.WorstFit} {
			tt.req.ID = tt.name
			plan, err := scheduler.Place(tt.nodes, tt.req, scheduler.Config{Policy: pol})
			if err != nil {
				t.Fatalf("%s/%s: %v", tt.name, pol, err)
			}
			if got := plan.Nodes(); got[0] != tt.want {
				t.Errorf("%s: Place(%s) = %v; want %s", tt.name, pol, got, tt.want)
			}
		}
	}
}

func TestTopology(t *testing.T) {
	// "pcie" comes first; "partial" links only cards 2 and 3; "nvlink"
	// links all. A 2-GPU replica goes on linked cards; a 4-GPU one on the
	// fully linked node.
	pcie := node("pcie", "A100", 4, 64000, 256)
	partial := node("partial", "A100", 4, 64000, 256)
	partial.GPUs[2].NVLink = []int{3}
	full := schedulertest.NVLinkAll(node("nvlink", "A100", 4, 64000, 256))
	tests := []struct {
		name   string
		nodes  []scheduler.Node
		gpus   int
		want   []string
		linked bool
	}{
		{"pair on linked cards", []scheduler.Node{pcie, partial}, 2, []string{"partial:2,3"}, true},
		{"four on full NVLink", []scheduler.Node{pcie, partial, full}, 4, []string{"nvlink:0,1,2,3"}, true},
		{"pcie when nothing else", []scheduler.Node{pcie}, 4, []string{"pcie:0,1,2,3"}, false},
	}
	for _, tt := range tests {
		for _, pol := range scheduler.Policies() {
			plan, err := scheduler.Place(tt.nodes, scheduler.Request{ID: "r", GPUs: tt.gpus}, scheduler.Config{Policy: pol})
			if err != nil {
				t.Fatalf("%s/%s: %v", tt.name, pol, err)
			}
			if got := placed(plan); !reflect.DeepEqual(got, tt.want) || plan.Replicas[0].NVLink != tt.linked {
				t.Errorf("%s: Place(%s) = %v nvlink %v; want %v nvlink %v", tt.name, pol, got, plan.Replicas[0].NVLink, tt.want, tt.linked)
			}
		}
	}
}

func TestCrossNode(t *testing.T) {
	nodes := []scheduler.Node{node("a", "T4", 2, 16000, 32), node("b", "T4", 2, 16000, 32)}
	req := scheduler.Request{ID: "r", GPUs: 4, CPUMilli: 1000}
	if _, err := scheduler.Place(nodes, req, scheduler.Config{}); !errors.Is(err, scheduler.ErrNeverFits) {
		t.Errorf("Place(4 GPUs on two 2-GPU nodes) = %v; want %v", err, scheduler.ErrNeverFits)
	}
	req.CrossNode = true
	plan, err := scheduler.Place(nodes, req, scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := placed(plan), []string{"a:0,1", "b:0,1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Place(cross-node) = %v; want %v", got, want)
	}
}

func TestGangAllOrNothing(t *testing.T) {
	nodes := []scheduler.Node{node("a", "T4", 2, 16000, 32), node("b", "T4", 2, 16000, 32)}
	pool, err := scheduler.NewPool(nodes, scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	req := scheduler.Request{ID: "ddp", GPUs: 2, Replicas: 3, Gang: true}
	plan, err := pool.Place(req)
	var ref *scheduler.Refusal
	if !errors.As(err, &ref) || len(plan.Replicas) != 0 || ref.Replica != 2 {
		t.Fatalf("Place(gang of 3 on room for 2) = %v, %v; want a refusal at replica 2 and no plan", placed(plan), err)
	}
	req.Gang = false
	plan, err = pool.Place(req)
	if !errors.Is(err, scheduler.ErrPartial) || !errors.Is(err, scheduler.ErrNoFit) || len(plan.Replicas) != 2 {
		t.Fatalf("Place(3 replicas on room for 2) = %v, %v; want 2 replicas and ErrPartial", placed(plan), err)
	}
	if got := plan.Nodes(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("replicas on %v; want a and b", got)
	}
	// Place changed nothing: a gang of two still fits.
	req.Replicas, req.Gang = 2, true
	if _, err := pool.Place(req); err != nil {
		t.Errorf("Place(gang of 2) after refused places = %v; want a plan", err)
	}
}

func TestPreemption(t *testing.T) {
	busy := func(id string, allocs ...scheduler.Allocation) scheduler.Node {
		n := node(id, "A100", 2, 64000, 256)
		n.CPUCapacity = 64000
		for _, a := range allocs {
			for _, g := range a.GPUs {
				n.GPUs[g.Index].FreeMilli -= g.Milli
			}
			n.CPUMilli -= a.CPUMilli
		}
		n.Allocations = allocs
		return n
	}
	batch := func(id string, prio int, cost float64, gpus ...int) scheduler.Allocation {
		a := scheduler.Allocation{ID: id, Class: scheduler.Batch, Priority: prio, Cost: cost}
		for _, g := range gpus {
			a.GPUs = append(a.GPUs, scheduler.GPUShare{Index: g, Milli: 1000})
		}
		return a
	}
	nodes := []scheduler.Node{
		busy("x", batch("train-1", 0, 50, 0), batch("train-2", 0, 10, 1)),
		busy("y", batch("train-3", 0, 5, 0, 1)),
		busy("z", scheduler.Allocation{ID: "serve", Class: scheduler.Inference, GPUs: []scheduler.GPUShare{{Index: 0, Milli: 1000}, {Index: 1, Milli: 1000}}}),
	}
	tests := []struct {
		name string
		req  scheduler.Request
		want []string // evicted node/allocation; nil: refused
	}{
		{"one GPU: cheapest victim", scheduler.Request{GPUs: 1, Class: scheduler.Inference, Priority: 1}, []string{"y/train-3"}},
		{"two GPUs: cheapest set", scheduler.Request{GPUs: 2, Class: scheduler.Inference, Priority: 1}, []string{"y/train-3"}},
		{"batch never evicts", scheduler.Request{GPUs: 1, Class: scheduler.Batch, Priority: 9}, nil},
		{"equal priority is not lower", scheduler.Request{GPUs: 1, Class: scheduler.Inference, Priority: 0}, nil},
	}
	for _, tt := range tests {
		tt.req.ID = tt.name
		plan, err := scheduler.Place(nodes, tt.req, scheduler.Config{})
		if tt.want == nil {
			if !errors.Is(err, scheduler.ErrNoFit) {
				t.Errorf("%s: Place = %v, %v; want ErrNoFit", tt.name, plan, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var got []string
		for _, e := range plan.Evictions {
			got = append(got, e.Node+"/"+e.Allocation)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: evictions %v; want %v", tt.name, got, tt.want)
		}
		pool, _ := scheduler.NewPool(nodes, scheduler.Config{})
		if err := pool.Commit(plan); err != nil {
			t.Errorf("%s: Commit = %v; want the plan to apply", tt.name, err)
		}
	}
	// Among victims on one node, spare the ones the fit does not need.
	one := []scheduler.Node{busy("x", batch("cheap", 0, 1, 0), batch("dear", 0, 100, 1))}
	plan, err := scheduler.Place(one, scheduler.Request{ID: "r", GPUs: 1, Class: scheduler.Inference, Priority: 1}, scheduler.Config{})
	if err != nil || len(plan.Evictions) != 1 || plan.Evictions[0].Allocation != "cheap" {
		t.Errorf("Place(1 GPU over two victims) evicts %v (%v); want only cheap", plan.Evictions, err)
	}
}

func TestVRAMShare(t *testing.T) {
	n := node("a", "RTX 4090", 1, 16000, 64)
	n.GPUs[0].VRAM, n.GPUs[0].FreeVRAM = 24*gib, 24*gib
	plan, err := scheduler.Place([]scheduler.Node{n}, scheduler.Request{ID: "r", GPUs: 1, VRAM: 6 * gib}, scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if g := plan.Replicas[0].Slots[0].GPUs[0]; g.Milli != 250 || g.VRAM != 6*gib {
		t.Errorf("6 GiB of a 24 GiB card: share %d milli, %d bytes; want 250 milli, 6 GiB", g.Milli, g.VRAM)
	}
}

func TestInvalidInput(t *testing.T) {
	good := node("a", "T4", 1, 1000, 1)
	tests := []struct {
		name  string
		nodes []scheduler.Node
		req   scheduler.Request
		cfg   scheduler.Config
		want  error
	}{
		{"share above a GPU", []scheduler.Node{good}, scheduler.Request{GPUs: 1, MilliGPU: 1500}, scheduler.Config{}, scheduler.ErrInvalidRequest},
		{"share without GPUs", []scheduler.Node{good}, scheduler.Request{MilliGPU: 500, CPUMilli: 1}, scheduler.Config{}, scheduler.ErrInvalidRequest},
		{"asks for nothing", []scheduler.Node{good}, scheduler.Request{}, scheduler.Config{}, scheduler.ErrInvalidRequest},
		{"negative GPUs", []scheduler.Node{good}, scheduler.Request{GPUs: -1}, scheduler.Config{}, scheduler.ErrInvalidRequest},
		{"duplicate node", []scheduler.Node{good, good}, scheduler.Request{GPUs: 1}, scheduler.Config{}, scheduler.ErrInvalidNode},
		{"free above total", []scheduler.Node{withFree(node("b", "T4", 1, 1, 1), 2000)}, scheduler.Request{GPUs: 1}, scheduler.Config{}, scheduler.ErrInvalidNode},
		{"unknown policy", []scheduler.Node{good}, scheduler.Request{GPUs: 1}, scheduler.Config{Policy: "tetris"}, scheduler.ErrUnknownPolicy},
		{"empty pool", nil, scheduler.Request{GPUs: 1}, scheduler.Config{}, scheduler.ErrNeverFits},
	}
	for _, tt := range tests {
		if _, err := scheduler.Place(tt.nodes, tt.req, tt.cfg); !errors.Is(err, tt.want) {
			t.Errorf("Place(%s) = %v; want %v", tt.name, err, tt.want)
		}
	}
}

func TestCommitRefusesOversell(t *testing.T) {
	pool, err := scheduler.NewPool([]scheduler.Node{node("a", "T4", 1, 8000, 16)}, scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pool.Place(scheduler.Request{ID: "r", GPUs: 1, MilliGPU: 600})
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Commit(plan); err != nil {
		t.Fatalf("first Commit = %v", err)
	}
	if err := pool.Commit(plan); !errors.Is(err, scheduler.ErrOversold) {
		t.Errorf("second Commit of the same 600 milli = %v; want %v", err, scheduler.ErrOversold)
	}
	n, _ := pool.Node("a")
	if n.GPUs[0].FreeMilli != 400 || len(n.Allocations) != 1 {
		t.Errorf("after one commit: free %d, %d allocations; want 400 and 1", n.GPUs[0].FreeMilli, len(n.Allocations))
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]scheduler.Policy{
		"": scheduler.FGD, "FGD": scheduler.FGD, "bestfit": scheduler.BestFit, "spread": scheduler.WorstFit,
		"worstfit": scheduler.WorstFit, "firstfit": scheduler.FirstFit, "random": scheduler.Random,
	} {
		if got, err := scheduler.ParsePolicy(in); got != want || err != nil {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
