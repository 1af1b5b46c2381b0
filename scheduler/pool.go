package scheduler

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"sort"
)

// maxGPUsPerNode bounds a node's cards: GPU sets are 64-bit masks.
const maxGPUsPerNode = 64

// Pool is the scheduler's view of a set of nodes: Place decides where a
// request goes without changing anything, Commit applies a plan to the view.
// It caches per-node scores, so placing many requests against one Pool is
// much cheaper than building a Pool per request. A Pool is not safe for
// concurrent use.
type Pool struct {
	cfg   Config
	nodes []*nodeState
	index map[string]int

	models names // interned GPU model names
	archs  names // interned architectures

	// maxCPU and maxGPU normalise the fit scores: the largest node's CPU
	// (milli) and GPU share (milli).
	maxCPU, maxGPU float64
	// fitWeight is Config.FitWeight, 0 for pure FGD.
	fitWeight float64
	// scarcityWeight is Config.ScarcityWeight, 0 when off.
	scarcityWeight float64

	rng *rand.Rand
	fgd fgdModel
	// shapeIDs numbers the request shapes seen, for the per-node FGD cache.
	shapeIDs map[Shape]int

	scratch resources
}

// nodeState is one node: its static description and its free resources.
type nodeState struct {
	id      string
	gpus    []GPU
	model   []int // interned model per GPU
	arch    []int // interned arch per GPU
	all     uint64
	nvlink  []uint64 // per GPU, mask of NVLink peers
	anyLink bool
	cpuCap  int64
	memCap  uint64
	maxVRAM uint64 // the largest card's memory: ranks refusals' closest node
	cached  map[string]bool
	price   float64
	allocs  []Allocation
	res     resources
	// ver grows with every change of res: it validates cached scores.
	ver uint64

	fgd nodeFGD
}

// resources are what changes as work is placed.
type resources struct {
	free  []int    // milli per GPU
	vfree []uint64 // VRAM bytes per GPU
	cpu   int64
	mem   uint64
	disk  uint64
}

func (r resources) clone() resources {
	return resources{
		free:  append([]int(nil), r.free...),
		vfree: append([]uint64(nil), r.vfree...),
		cpu:   r.cpu, mem: r.mem, disk: r.disk,
	}
}

// copyInto copies r into dst, reusing dst's slices.
func (r resources) copyInto(dst *resources) {
	dst.free = append(dst.free[:0], r.free...)
	dst.vfree = append(dst.vfree[:0], r.vfree...)
	dst.cpu, dst.mem, dst.disk = r.cpu, r.mem, r.disk
}

func (r resources) freeMilli() int {
	t := 0
	for _, f := range r.free {
		t += f
	}
	return t
}

// names interns strings to small integers.
type names struct{ idx map[string]int }

func (n *names) id(s string) int {
	if n.idx == nil {
		n.idx = map[string]int{}
	}
	if i, ok := n.idx[s]; ok {
		return i
	}
	i := len(n.idx)
	n.idx[s] = i
	return i
}

// set returns the bitset of the known names among ss; nil means "any"
// (ss empty). Unknown names match no card.
func (n *names) set(ss []string) bitset {
	if len(ss) == 0 {
		return nil
	}
	b := bitset{0}
	for _, s := range ss {
		if i, ok := n.idx[s]; ok {
			b = b.with(i)
		}
	}
	return b
}

// bitset is a set of small integers; nil is "any".
type bitset []uint64

func (b bitset) with(i int) bitset {
	for len(b) <= i/64 {
		b = append(b, 0)
	}
	b[i/64] |= 1 << (i % 64)
	return b
}

func (b bitset) has(i int) bool {
	if b == nil {
		return true
	}
	return i/64 < len(b) && b[i/64]&(1<<(i%64)) != 0
}

// NewPool builds a pool from a snapshot. The nodes are copied.
func NewPool(nodes []Node, cfg Config) (*Pool, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Pool{
		cfg:      cfg,
		index:    make(map[string]int, len(nodes)),
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x5ca1ab1e)),
		shapeIDs: map[Shape]int{},
	}
	p.fgd.builtAt = -1
	p.fitWeight = max(0, cfg.FitWeight)
	p.scarcityWeight = max(0, cfg.ScarcityWeight)
	for _, n := range nodes {
		if _, dup := p.index[n.ID]; dup {
			return nil, fmt.Errorf("%w: duplicate node ID %q", ErrInvalidNode, n.ID)
		}
		s, err := p.newNodeState(n)
		if err != nil {
			return nil, err
		}
		p.index[n.ID] = len(p.nodes)
		p.nodes = append(p.nodes, s)
	}
	p.rescale()
	return p, nil
}

func (p *Pool) newNodeState(n Node) (*nodeState, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: node %q: %s", ErrInvalidNode, n.ID, fmt.Sprintf(format, args...))
	}
	if n.ID == "" {
		return nil, bad("empty ID")
	}
	if len(n.GPUs) > maxGPUsPerNode {
		return nil, bad("%d GPUs, at most %d", len(n.GPUs), maxGPUsPerNode)
	}
	if n.CPUMilli < 0 || n.PricePerGPUHour < 0 {
		return nil, bad("negative CPU or price")
	}
	s := &nodeState{
		id:     n.ID,
		gpus:   make([]GPU, len(n.GPUs)),
		model:  make([]int, len(n.GPUs)),
		arch:   make([]int, len(n.GPUs)),
		nvlink: make([]uint64, len(n.GPUs)),
		cpuCap: n.CPUCapacity,
		memCap: n.MemoryCapacity,
		price:  n.PricePerGPUHour,
		allocs: append([]Allocation(nil), n.Allocations...),
		res: resources{
			free:  make([]int, len(n.GPUs)),
			vfree: make([]uint64, len(n.GPUs)),
			cpu:   n.CPUMilli, mem: n.MemoryBytes, disk: n.DiskBytes,
		},
	}
	if s.cpuCap < n.CPUMilli {
		s.cpuCap = n.CPUMilli
	}
	if s.memCap < n.MemoryBytes {
		s.memCap = n.MemoryBytes
	}
	for i, g := range n.GPUs {
		if g.FreeMilli < 0 || g.FreeMilli > MilliPerGPU {
			return nil, bad("GPU %d: free share %d outside 0..%d", i, g.FreeMilli, MilliPerGPU)
		}
		if g.VRAM > 0 && g.FreeVRAM > g.VRAM {
			return nil, bad("GPU %d: free VRAM %d above total %d", i, g.FreeVRAM, g.VRAM)
		}
		s.maxVRAM = max(s.maxVRAM, g.VRAM)
		g.NVLink = append([]int(nil), g.NVLink...)
		for _, j := range g.NVLink {
			if j < 0 || j >= len(n.GPUs) || j == i {
				return nil, bad("GPU %d: NVLink peer %d is not another GPU of the node", i, j)
			}
			s.nvlink[i] |= 1 << j
			s.anyLink = true
		}
		s.gpus[i] = g
		s.model[i] = p.models.id(g.Model)
		s.arch[i] = p.archs.id(g.Arch)
		s.all |= 1 << i
		s.res.free[i] = g.FreeMilli
		s.res.vfree[i] = g.FreeVRAM
	}
	// NVLink is symmetric even when a snapshot lists one direction only.
	for i := range s.nvlink {
		for j := range s.nvlink {
			if s.nvlink[j]&(1<<i) != 0 {
				s.nvlink[i] |= 1 << j
			}
		}
	}
	if len(n.Models) > 0 {
		s.cached = make(map[string]bool, len(n.Models))
		for _, m := range n.Models {
			s.cached[m] = true
		}
	}
	return s, nil
}

func (p *Pool) rescale() {
	p.maxCPU, p.maxGPU = 1, 1
	for _, n := range p.nodes {
		p.maxCPU = max(p.maxCPU, float64(n.cpuCap))
		p.maxGPU = max(p.maxGPU, float64(len(n.gpus)*MilliPerGPU))
	}
}

// Update replaces the snapshot of node n.ID (or adds it): a fresh record
// from the node wins over what the pool computed.
func (p *Pool) Update(n Node) error {
	s, err := p.newNodeState(n)
	if err != nil {
		return err
	}
	if i, ok := p.index[n.ID]; ok {
		s.ver = p.nodes[i].ver + 1
		p.nodes[i] = s
	} else {
		p.index[n.ID] = len(p.nodes)
		p.nodes = append(p.nodes, s)
	}
	p.fgd.builtAt = -1 // the new node needs its eligibility masks
	p.rescale()
	return nil
}

// Observe feeds one arriving request into the learned workload.
func (p *Pool) Observe(r Request) { p.cfg.Workload.Observe(r) }

// Policy is the pool's ranking policy.
func (p *Pool) Policy() Policy { return p.cfg.Policy }

// Len is the number of nodes.
func (p *Pool) Len() int { return len(p.nodes) }

// Node returns the current view of one node.
func (p *Pool) Node(id string) (Node, bool) {
	i, ok := p.index[id]
	if !ok {
		return Node{}, false
	}
	return p.nodes[i].snapshot(), true
}

// Nodes returns the current view of every node, in snapshot order.
func (p *Pool) Nodes() []Node {
	out := make([]Node, len(p.nodes))
	for i, n := range p.nodes {
		out[i] = n.snapshot()
	}
	return out
}

func (n *nodeState) snapshot() Node {
	out := Node{
		ID: n.id, GPUs: make([]GPU, len(n.gpus)),
		CPUMilli: n.res.cpu, MemoryBytes: n.res.mem, DiskBytes: n.res.disk,
		CPUCapacity: n.cpuCap, MemoryCapacity: n.memCap,
		PricePerGPUHour: n.price, Allocations: append([]Allocation(nil), n.allocs...),
	}
	for i, g := range n.gpus {
		g.FreeMilli = n.res.free[i]
		g.FreeVRAM = n.res.vfree[i]
		g.NVLink = append([]int(nil), g.NVLink...)
		out.GPUs[i] = g
	}
	for m := range n.cached {
		out.Models = append(out.Models, m)
	}
	sortStrings(out.Models)
	return out
}

// AllocatedMilli is the GPU share held across the pool (capacity minus
// free), the replay's measure of allocation.
func (p *Pool) AllocatedMilli() int64 {
	var t int64
	for _, n := range p.nodes {
		t += int64(len(n.gpus)*MilliPerGPU - n.res.freeMilli())
	}
	return t
}

// CapacityMilli is the pool's total GPU share.
func (p *Pool) CapacityMilli() int64 {
	var t int64
	for _, n := range p.nodes {
		t += int64(len(n.gpus) * MilliPerGPU)
	}
	return t
}

// Commit applies a plan to the pool's view: evictions first, then every
// slot. It checks capacity again and applies all or nothing: a plan that no
// longer fits returns ErrOversold and changes nothing.
func (p *Pool) Commit(plan Plan) error {
	// Work on copies of the touched nodes' resources, then swap them in.
	touched := map[int]*resources{}
	allocs := map[int][]Allocation{}
	get := func(id string) (int, *resources, error) {
		i, ok := p.index[id]
		if !ok {
			return 0, nil, fmt.Errorf("%w %q", ErrUnknownNode, id)
		}
		r, ok := touched[i]
		if !ok {
			c := p.nodes[i].res.clone()
			r = &c
			touched[i] = r
			allocs[i] = append([]Allocation(nil), p.nodes[i].allocs...)
		}
		return i, r, nil
	}
	for _, e := range plan.Evictions {
		i, r, err := get(e.Node)
		if err != nil {
			return err
		}
		k := -1
		for j, a := range allocs[i] {
			if a.ID == e.Allocation {
				k = j
				break
			}
		}
		if k < 0 {
			return fmt.Errorf("%w: node %s holds no allocation %q", ErrOversold, e.Node, e.Allocation)
		}
		release(p.nodes[i], r, allocs[i][k])
		allocs[i] = append(allocs[i][:k:k], allocs[i][k+1:]...)
	}
	for ri, rep := range plan.Replicas {
		for _, s := range rep.Slots {
			i, r, err := get(s.Node)
			if err != nil {
				return err
			}
			n := p.nodes[i]
			if r.cpu < s.CPUMilli || r.mem < s.MemoryBytes || r.disk < s.DiskBytes {
				return fmt.Errorf("%w: node %s: host resources", ErrOversold, s.Node)
			}
			r.cpu -= s.CPUMilli
			r.mem -= s.MemoryBytes
			r.disk -= s.DiskBytes
			for _, g := range s.GPUs {
				if g.Index < 0 || g.Index >= len(n.gpus) {
					return fmt.Errorf("%w: node %s has no GPU %d", ErrOversold, s.Node, g.Index)
				}
				if g.Milli <= 0 || r.free[g.Index] < g.Milli || (g.VRAM > 0 && r.vfree[g.Index] < g.VRAM) {
					return fmt.Errorf("%w: node %s GPU %d", ErrOversold, s.Node, g.Index)
				}
				r.free[g.Index] -= g.Milli
				r.vfree[g.Index] -= g.VRAM
			}
			id := plan.Request
			if len(plan.Replicas) > 1 {
				id = fmt.Sprintf("%s/%d", plan.Request, ri)
			}
			allocs[i] = append(allocs[i], Allocation{
				ID: id, Class: plan.Class, Priority: plan.Priority,
				GPUs: append([]GPUShare(nil), s.GPUs...), CPUMilli: s.CPUMilli, MemoryBytes: s.MemoryBytes,
			})
		}
	}
	for i, r := range touched {
		p.nodes[i].res = *r
		p.nodes[i].allocs = allocs[i]
		p.nodes[i].ver++
	}
	return nil
}

// release gives an allocation's resources back to r.
func release(n *nodeState, r *resources, a Allocation) {
	r.cpu += a.CPUMilli
	r.mem += a.MemoryBytes
	for _, g := range a.GPUs {
		if g.Index < 0 || g.Index >= len(r.free) {
			continue
		}
		r.free[g.Index] = min(MilliPerGPU, r.free[g.Index]+g.Milli)
		if v := n.gpus[g.Index].VRAM; v > 0 {
			r.vfree[g.Index] = min(v, r.vfree[g.Index]+g.VRAM)
		}
	}
}

func popcount(m uint64) int { return bits.OnesCount64(m) }

func sortStrings(s []string) { sort.Strings(s) }

// larger reports whether a is the bigger machine of two that a request
// stopped at the same filter: the one to name as closest. Largest card
// first, then more cards, then more CPU; the first in view order otherwise.
func larger(a, b *nodeState) bool {
	if a.maxVRAM != b.maxVRAM {
		return a.maxVRAM > b.maxVRAM
	}
	if len(a.gpus) != len(b.gpus) {
		return len(a.gpus) > len(b.gpus)
	}
	return a.cpuCap > b.cpuCap
}
