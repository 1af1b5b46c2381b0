package scheduler

import "fmt"

// want is one replica of a request compiled against a pool.
type want struct {
	id        string
	shape     Shape
	shapeID   int
	k         int
	milli     int // per GPU; 0 with vram set: derived per card
	vram      uint64
	minVRAM   uint64
	models    bitset
	archs     bitset
	minCC     ComputeCapability
	anyGPU    bool // no static GPU constraint
	cpu       int64
	mem       uint64
	disk      uint64
	modelID   string
	maxPrice  float64
	class     Class
	priority  int
	crossNode bool
}

// compile validates r and resolves its names against the pool.
func (p *Pool) compile(r Request) (want, error) {
	bad := func(format string, args ...any) (want, error) {
		return want{}, fmt.Errorf("%w %q: %s", ErrInvalidRequest, r.ID, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Replicas < 0:
		return bad("replicas %d is negative", r.Replicas)
	case r.GPUs < 0:
		return bad("GPUs %d is negative", r.GPUs)
	case r.GPUs > maxGPUsPerNode && !r.CrossNode:
		return bad("%d GPUs per replica; one node holds at most %d", r.GPUs, maxGPUsPerNode)
	case r.MilliGPU < 0 || r.MilliGPU > MilliPerGPU:
		return bad("GPU share %d outside 0..%d", r.MilliGPU, MilliPerGPU)
	case r.GPUs == 0 && (r.MilliGPU > 0 || r.VRAM > 0 || r.MinVRAM > 0 || len(r.Models) > 0 || len(r.Archs) > 0 || !r.MinCompute.IsZero()):
		return bad("GPU constraints on a request for no GPUs")
	case r.CPUMilli < 0:
		return bad("CPU %d is negative", r.CPUMilli)
	case r.MaxPrice < 0:
		return bad("price limit %g is negative", r.MaxPrice)
	case r.GPUs == 0 && r.CPUMilli == 0 && r.MemoryBytes == 0:
		return bad("asks for nothing")
	}
	s := ShapeOf(r)
	id, ok := p.shapeIDs[s]
	if !ok {
		id = len(p.shapeIDs)
		p.shapeIDs[s] = id
	}
	w := want{
		id: r.ID, shape: s, shapeID: id,
		k: r.GPUs, milli: s.MilliGPU, vram: r.VRAM, minVRAM: r.MinVRAM,
		models: p.models.set(r.Models), archs: p.archs.set(r.Archs), minCC: r.MinCompute,
		cpu: r.CPUMilli, mem: r.MemoryBytes, disk: r.DiskBytes, modelID: r.ModelID,
		maxPrice: r.MaxPrice, class: r.Class, priority: r.Priority, crossNode: r.CrossNode,
	}
	w.anyGPU = w.models == nil && w.archs == nil && w.minCC.IsZero() && w.minVRAM == 0
	return w, nil
}

// need is the share w takes of card g; ok is false when the card cannot
// hold it at all (VRAM asked of a card of unknown size).
func (w *want) need(g *GPU) (milli int, ok bool) {
	if w.vram > 0 && g.VRAM == 0 {
		return 0, false
	}
	if w.milli > 0 {
		return w.milli, true
	}
	m := int((w.vram*MilliPerGPU + g.VRAM - 1) / g.VRAM)
	return max(1, min(MilliPerGPU, m)), true
}

// eligible returns the cards that pass w's static constraints and the
// reason the first constraint that left fewer than k cards.
func (n *nodeState) eligible(w *want) (uint64, Reason) {
	if w.anyGPU {
		return n.all, ""
	}
	m := n.all
	if w.models != nil {
		for i := range n.gpus {
			if !w.models.has(n.model[i]) {
				m &^= 1 << i
			}
		}
		if popcount(m) < w.k {
			return m, ReasonGPUModel
		}
	}
	if w.archs != nil {
		for i := range n.gpus {
			if !w.archs.has(n.arch[i]) {
				m &^= 1 << i
			}
		}
		if popcount(m) < w.k {
			return m, ReasonGPUArch
		}
	}
	if !w.minCC.IsZero() {
		for i := range n.gpus {
			if n.gpus[i].Compute.Less(w.minCC) {
				m &^= 1 << i
			}
		}
		if popcount(m) < w.k {
			return m, ReasonCompute
		}
	}
	if w.minVRAM > 0 {
		for i := range n.gpus {
			if n.gpus[i].VRAM < w.minVRAM {
				m &^= 1 << i
			}
		}
		if popcount(m) < w.k {
			return m, ReasonMinVRAM
		}
	}
	return m, ""
}

// check runs the filters on node n with resources r, cheapest first, and
// returns the first that fails ("" when none) and the cards that can take
// w's share. With capacity set it judges an empty node: a failure then
// means w can never fit there.
//
// Order: price and card count read one number; the static card constraints
// (model, architecture, compute capability, memory size) loop over the
// cards without looking at load; host CPU, memory and disk read one number
// each; the free share of each card comes last because it loops again.
func (n *nodeState) check(r *resources, w *want, capacity bool) (Reason, uint64) {
	if w.k > 0 {
		if w.maxPrice > 0 && n.price > w.maxPrice {
			return ReasonPrice, 0
		}
		if len(n.gpus) < w.k {
			return ReasonGPUCount, 0
		}
	}
	var elig uint64
	if w.k > 0 {
		var why Reason
		if elig, why = n.eligible(w); why != "" {
			return why, 0
		}
	}
	cpu, mem := r.cpu, r.mem
	if capacity {
		cpu, mem = n.cpuCap, n.memCap
	}
	if cpu < w.cpu {
		return ReasonCPU, 0
	}
	if mem < w.mem {
		return ReasonMemory, 0
	}
	if w.disk > 0 && r.disk < w.disk && !n.cached[w.modelID] {
		return ReasonDisk, 0
	}
	if w.k == 0 {
		return "", 0
	}
	var fit uint64
	vramShort := false
	for m := elig; m != 0; m &= m - 1 {
		i := trailing(m)
		g := &n.gpus[i]
		need, ok := w.need(g)
		if !ok {
			continue
		}
		free, vfree := r.free[i], r.vfree[i]
		if capacity {
			free, vfree = MilliPerGPU, g.VRAM
		}
		if free < need {
			continue
		}
		if w.vram > 0 && vfree < w.vram {
			vramShort = true
			continue
		}
		fit |= 1 << i
	}
	if popcount(fit) < w.k {
		if vramShort {
			return ReasonVRAMFree, fit
		}
		return ReasonGPUFree, fit
	}
	return "", fit
}

// explain says what node n lacked for reason.
func (n *nodeState) explain(r *resources, w *want, capacity bool, reason Reason) string {
	cpu, mem := r.cpu, r.mem
	if capacity {
		cpu, mem = n.cpuCap, n.memCap
	}
	switch reason {
	case ReasonPrice:
		return fmt.Sprintf("asks %g per GPU-hour, limit %g", n.price, w.maxPrice)
	case ReasonGPUCount:
		return fmt.Sprintf("has %d GPUs, needs %d", len(n.gpus), w.k)
	case ReasonGPUModel, ReasonGPUArch, ReasonCompute, ReasonMinVRAM:
		m, _ := n.eligible(w)
		have := ""
		if len(n.gpus) > 0 {
			g := n.gpus[0]
			have = fmt.Sprintf(" (has %s, %s, compute %s, %s)", dashIf(g.Model), dashIf(g.Arch), g.Compute, bytesText(g.VRAM))
		}
		return fmt.Sprintf("has %d allowed GPUs, needs %d%s", popcount(m), w.k, have)
	case ReasonCPU:
		return fmt.Sprintf("has %d milli-CPU free, needs %d", cpu, w.cpu)
	case ReasonMemory:
		return fmt.Sprintf("has %s memory free, needs %s", bytesText(mem), bytesText(w.mem))
	case ReasonDisk:
		return fmt.Sprintf("has %s disk free, needs %s", bytesText(r.disk), bytesText(w.disk))
	case ReasonGPUFree, ReasonVRAMFree:
		_, fit := n.check(r, w, capacity)
		share := fmt.Sprintf("%d milli", w.milli)
		if w.milli == 0 {
			share = "a share"
		}
		if w.vram > 0 {
			share += " and " + bytesText(w.vram)
		}
		return fmt.Sprintf("has %d GPUs with %s free, needs %d", popcount(fit), share, w.k)
	}
	return ""
}

func dashIf(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesText(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d B", b)
}
