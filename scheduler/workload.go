package scheduler

import (
	"sort"
	"strings"
)

// Shape is the part of a request that decides where it can fit: what
// fragmentation is measured against.
type Shape struct {
	GPUs        int
	MilliGPU    int // per GPU; 0 with VRAM set: the VRAM's share of the card
	VRAM        uint64
	MinVRAM     uint64
	CPUMilli    int64
	MemoryBytes uint64
	Models      string // allowed models, sorted, joined by "|"; "" is any
	Archs       string // allowed architectures, likewise
	MinCompute  ComputeCapability
}

// ShapeOf returns the shape of one replica of r (r must be valid).
func ShapeOf(r Request) Shape {
	milli := r.MilliGPU
	if r.GPUs > 0 && milli == 0 && r.VRAM == 0 {
		milli = MilliPerGPU
	}
	if r.GPUs == 0 {
		milli = 0
	}
	return Shape{
		GPUs: r.GPUs, MilliGPU: milli, VRAM: r.VRAM, MinVRAM: r.MinVRAM,
		CPUMilli: r.CPUMilli, MemoryBytes: r.MemoryBytes,
		Models: joinSorted(r.Models), Archs: joinSorted(r.Archs), MinCompute: r.MinCompute,
	}
}

func joinSorted(s []string) string {
	if len(s) == 0 {
		return ""
	}
	c := append([]string(nil), s...)
	sort.Strings(c)
	return strings.Join(c, "|")
}

func splitSet(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "|")
}

// WeightedShape is a shape and its share of the observed requests.
type WeightedShape struct {
	Shape  Shape
	Weight float64 // 0..1; the weights of Workload.Shapes sum to 1
}

// Workload is the distribution of request shapes a pool sees, learned
// online: the FGD policy measures fragmentation against it. Every replica of
// every arriving request should be observed once (Pool.Observe), whether it
// then fits or not. A Workload is not safe for concurrent use; it can
// outlive the Pools that use it.
type Workload struct {
	counts map[Shape]float64
	total  float64
	// version grows with every observation.
	version uint64
}

// NewWorkload returns an empty workload.
func NewWorkload() *Workload { return &Workload{counts: map[Shape]float64{}} }

// Observe counts one arrival of each replica of r.
func (w *Workload) Observe(r Request) {
	n := r.Replicas
	if n <= 0 {
		n = 1
	}
	w.ObserveShape(ShapeOf(r), float64(n))
}

// ObserveShape adds weight arrivals of s.
func (w *Workload) ObserveShape(s Shape, weight float64) {
	if weight <= 0 {
		return
	}
	w.counts[s] += weight
	w.total += weight
	w.version++
}

// Total is the number of arrivals observed.
func (w *Workload) Total() float64 { return w.total }

// Shapes returns the distribution, most frequent first (ties in a fixed
// order so that placement stays deterministic).
func (w *Workload) Shapes() []WeightedShape {
	out := make([]WeightedShape, 0, len(w.counts))
	for s, c := range w.counts {
		out = append(out, WeightedShape{Shape: s, Weight: c / w.total})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Weight != out[j].Weight {
			return out[i].Weight > out[j].Weight
		}
		return shapeLess(out[i].Shape, out[j].Shape)
	})
	return out
}

func shapeLess(a, b Shape) bool {
	switch {
	case a.GPUs != b.GPUs:
		return a.GPUs < b.GPUs
	case a.MilliGPU != b.MilliGPU:
		return a.MilliGPU < b.MilliGPU
	case a.VRAM != b.VRAM:
		return a.VRAM < b.VRAM
	case a.MinVRAM != b.MinVRAM:
		return a.MinVRAM < b.MinVRAM
	case a.CPUMilli != b.CPUMilli:
		return a.CPUMilli < b.CPUMilli
	case a.MemoryBytes != b.MemoryBytes:
		return a.MemoryBytes < b.MemoryBytes
	case a.Models != b.Models:
		return a.Models < b.Models
	case a.Archs != b.Archs:
		return a.Archs < b.Archs
	}
	return a.MinCompute.Less(b.MinCompute)
}
