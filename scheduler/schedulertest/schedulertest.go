// Package schedulertest builds inputs for tests of the scheduler and its
// replay: small node snapshots, and generated node and pod lists in the
// layout of Alibaba's GPU trace with other mixes of work (more CPU-only
// pods, more GPU sharing, more multi-GPU pods, GPU-model constraints).
// Generation draws only from the *rand.Rand it is given.
package schedulertest

import (
	"fmt"
	"math/rand/v2"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/sim"
)

// GiB is a gibibyte in bytes.
const GiB = 1 << 30

// GPUNode is a node of n free cards of one model, with cpu milli-cores and
// mem GiB free.
func GPUNode(id, model string, n int, cpu int64, memGiB uint64) scheduler.Node {
	node := scheduler.Node{ID: id, CPUMilli: cpu, MemoryBytes: memGiB * GiB, GPUs: make([]scheduler.GPU, n)}
	for i := range node.GPUs {
		node.GPUs[i] = scheduler.GPU{
			UUID: fmt.Sprintf("%s-gpu%d", id, i), Model: model, FreeMilli: scheduler.MilliPerGPU,
		}
	}
	return node
}

// NVLinkAll joins every pair of node's cards by NVLink.
func NVLinkAll(node scheduler.Node) scheduler.Node {
	for i := range node.GPUs {
		node.GPUs[i].NVLink = nil
		for j := range node.GPUs {
			if j != i {
				node.GPUs[i].NVLink = append(node.GPUs[i].NVLink, j)
			}
		}
	}
	return node
}

// nodeKinds is a cluster shaped like the trace's: many 8-card servers, a
// good number of 2-card boxes, a few small machines.
var nodeKinds = []struct {
	model  string
	gpus   int
	cpu    int64
	memMiB int64
	share  float64
}{
	{"G2", 8, 96000, 393216, 0.45},
	{"T4", 2, 104000, 524288, 0.30},
	{"P100", 2, 16000, 122880, 0.10},
	{"V100M16", 4, 32000, 131072, 0.05},
	{"V100M16", 1, 8000, 32768, 0.03},
	{"V100M32", 8, 96000, 786432, 0.04},
	{"G3", 8, 128000, 786432, 0.03},
}

// Models are the GPU models GenNodes uses.
func Models() []string { return []string{"G2", "T4", "P100", "V100M16", "V100M32", "G3"} }

// GenNodes returns n nodes in the trace's node-list layout.
func GenNodes(rng *rand.Rand, n int) []sim.Node {
	out := make([]sim.Node, n)
	for i := range out {
		x := rng.Float64()
		k := nodeKinds[len(nodeKinds)-1]
		for _, c := range nodeKinds {
			if x < c.share {
				k = c
				break
			}
			x -= c.share
		}
		out[i] = sim.Node{Name: fmt.Sprintf("gen-node-%04d", i), CPUMilli: k.cpu, MemoryMiB: k.memMiB, GPUs: k.gpus, Model: k.model}
	}
	return out
}

// Mix is the make-up of a generated pod list; the fractions are of pods.
type Mix struct {
	Name string
	// CPUOnly, Share (one card, a share below 1000) and Multi (2, 4 or 8
	// whole cards) pods; the rest ask for one whole card.
	CPUOnly, Share, Multi float64
	// Constrained is the fraction of GPU pods limited to one or two models.
	Constrained float64
}

// Mixes are the pod mixes beside the trace's default one.
func Mixes() []Mix {
	return []Mix{
		{Name: "default-like", CPUOnly: 0.13, Share: 0.35, Multi: 0.01},
		{Name: "cpu-heavy", CPUOnly: 0.40, Share: 0.25, Multi: 0.01},
		{Name: "sharing", CPUOnly: 0.10, Share: 0.70, Multi: 0.01},
		{Name: "multi-gpu", CPUOnly: 0.10, Share: 0.30, Multi: 0.08},
		{Name: "constrained", CPUOnly: 0.13, Share: 0.35, Multi: 0.01, Constrained: 0.3},
	}
}

// shares are GPU shares the trace's sharing pods ask for, most common first.
var shares = []int{810, 470, 320, 650, 230, 460, 590, 160, 550, 220, 370, 110}

// GenPods returns n pods of the mix in the trace's pod-list layout.
func GenPods(rng *rand.Rand, m Mix, n int) []sim.Pod {
	out := make([]sim.Pod, n)
	models := Models()
	for i := range out {
		p := sim.Pod{Name: fmt.Sprintf("gen-pod-%05d", i), QoS: "LS", Phase: "Running", Creation: -1, Deletion: -1, Scheduled: -1}
		x := rng.Float64()
		switch {
		case x < m.CPUOnly:
			p.CPUMilli = []int64{4000, 8000, 12500, 16000, 32000}[rng.IntN(5)]
			p.MemoryMiB = p.CPUMilli / 1000 * 4096
		case x < m.CPUOnly+m.Share:
			p.NumGPU = 1
			// Skewed towards the common shares, like the trace.
			p.GPUMilli = shares[min(rng.IntN(len(shares)), rng.IntN(len(shares)))]
			p.CPUMilli = []int64{3152, 4000, 6000, 8000}[rng.IntN(4)]
			p.MemoryMiB = p.CPUMilli / 1000 * 3000
		case x < m.CPUOnly+m.Share+m.Multi:
			p.NumGPU = []int{2, 4, 8}[rng.IntN(3)]
			p.GPUMilli = scheduler.MilliPerGPU
			p.CPUMilli = int64(p.NumGPU) * []int64{4000, 8000, 11000}[rng.IntN(3)]
			p.MemoryMiB = p.CPUMilli / 1000 * 4096
		default:
			p.NumGPU = 1
			p.GPUMilli = scheduler.MilliPerGPU
			p.CPUMilli = []int64{4000, 8000, 11300, 12000, 16000}[rng.IntN(5)]
			p.MemoryMiB = p.CPUMilli / 1000 * 4096
		}
		if p.NumGPU > 0 && rng.Float64() < m.Constrained {
			p.GPUSpec = []string{models[rng.IntN(len(models))]}
			if rng.IntN(2) == 0 {
				p.GPUSpec = append(p.GPUSpec, models[rng.IntN(len(models))])
			}
		}
		out[i] = p
	}
	return out
}
