package sim_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/sim"
)

// traceDir is the shared copy of Alibaba's cluster-trace-gpu-v2023, beside
// the repository (never inside it).
var traceDir = filepath.Join("..", "..", "..", "shared", "traces", "alibaba-gpu-v2023")

// realTrace loads the shared trace or skips the test.
func realTrace(tb testing.TB) ([]sim.Node, []sim.Pod) {
	tb.Helper()
	nodesPath := filepath.Join(traceDir, "openb_node_list_gpu_node.csv")
	podsPath := filepath.Join(traceDir, "openb_pod_list_default.csv")
	if _, err := os.Stat(nodesPath); err != nil {
		tb.Skipf("trace not available: %s is absent (see ../shared/traces/alibaba-gpu-v2023/README.md)", traceDir)
	}
	nodes, err := sim.ReadNodesFile(nodesPath)
	if err != nil {
		tb.Fatal(err)
	}
	pods, err := sim.ReadPodsFile(podsPath)
	if err != nil {
		tb.Fatal(err)
	}
	return nodes, pods
}

// TestTraceCalibration replays one seed of the shared trace: best-fit and
// random land near the published 7.14% and 13.70%, and FGD below 4.77%.
func TestTraceCalibration(t *testing.T) {
	if testing.Short() {
		t.Skip("replays the full trace")
	}
	nodes, pods := realTrace(t)
	if len(nodes) != 1213 {
		t.Fatalf("%d nodes; want 1213", len(nodes))
	}
	for _, tt := range []struct {
		policy   scheduler.Policy
		min, max float64 // unallocated % at 100% arrived, one seed
	}{
		{scheduler.FGD, 3, 5.5},
		{scheduler.BestFit, 5.5, 8.5},
		{scheduler.Random, 11, 15.5},
	} {
		res, err := sim.Replay(nodes, pods, sim.Config{Policy: tt.policy, Seeds: []uint64{42}})
		if err != nil {
			t.Fatal(err)
		}
		got := res.UnallocatedPct["100"]
		t.Logf("%s: %.2f%% unallocated at 100%% arrived", tt.policy, got)
		if got < tt.min || got > tt.max {
			t.Errorf("%s: %.2f%% unallocated at 100%% arrived; want %.1f..%.1f", tt.policy, got, tt.min, tt.max)
		}
	}
}

// BenchmarkPlace is the latency of one placement on the 1,213-node trace
// cluster, half full of the trace's own pods, with the default policy.
func BenchmarkPlace(b *testing.B) {
	for _, pol := range scheduler.Policies() {
		b.Run(string(pol), func(b *testing.B) {
			nodes, pods := realTrace(b)
			pool, err := scheduler.NewPool(sim.SchedulerNodes(nodes), scheduler.Config{Policy: pol})
			if err != nil {
				b.Fatal(err)
			}
			list := sim.Arrivals(pods, pool.CapacityMilli()/2, 42)
			for _, p := range list {
				pool.Observe(p.Request())
				if plan, err := pool.Place(p.Request()); err == nil {
					pool.Commit(plan)
				}
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				// Place without Commit: the pool stays half full, and the
				// scores of nodes are not cached across iterations of one
				// request shape more than a live pool would cache them.
				req := pods[i%len(pods)].Request()
				pool.Observe(req)
				pool.Place(req)
			}
		})
	}
}

// BenchmarkReplay is one seed of the whole trace with the default policy.
func BenchmarkReplay(b *testing.B) {
	nodes, pods := realTrace(b)
	for b.Loop() {
		if _, err := sim.Replay(nodes, pods, sim.Config{Seeds: []uint64{42}, Workers: 1}); err != nil {
			b.Fatal(err)
		}
	}
}
