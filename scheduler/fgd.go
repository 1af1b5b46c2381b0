package scheduler

import "math"

// Fragmentation, after Weng et al., "Beware of Fragmentation: Scheduling
// GPU-Sharing Workloads with Fragmentation Gradient Descent" (USENIX ATC
// 2023). For one request shape s, the fragment of a node is the free GPU
// share that s cannot use there: all of it when s does not fit on the node
// at all (too little CPU or memory, too few cards of an allowed model with
// enough free), otherwise the free share of the cards too small for one of
// s's GPUs. A node's fragmentation is the mean fragment over the workload's
// shapes, weighted by how often each arrives; CPU-only shapes count all free
// GPU share as fragment. FGD places a request where its fragmentation grows
// least.

// fgdModel is the workload as FGD reads it, grouped by the GPU part of the
// shapes so that one pass over a node's cards serves every shape of a
// group.
type fgdModel struct {
	// epoch numbers the reads; cached scores from another epoch are stale.
	epoch uint64
	// builtAt is the workload total at the last read; -1 before any.
	builtAt float64
	cpuOnly float64 // weight of CPU-only shapes
	groups  []fgdGroup
	// press is, per group, what one milli-GPU of a card the group may use
	// is worth to it (see scarcity); 0 for groups that may use any card.
	press []float64
}

type fgdGroup struct {
	want   want // the GPU part: k, share, VRAM and static constraints
	wsum   float64
	shapes []fgdShape
}

type fgdShape struct {
	cpu int64
	mem uint64
	w   float64
}

// nodeFGD caches a node's fragmentation and its score for each request
// shape; entries are valid for one (node version, epoch).
type nodeFGD struct {
	epoch uint64   // epoch of elig
	elig  []uint64 // per group: cards passing the group's static constraints
	// press is, per card, the scarcity price of one milli-GPU of it.
	press []float64

	fragVer, fragEpoch uint64
	frag               float64

	cache []fgdEntry // by shape ID
}

type fgdEntry struct {
	ver, epoch uint64
	delta      float64
	mask       uint64
}

// relearn reads the workload again when it has grown enough since the last
// read. An empty workload is read as the request at hand alone.
func (p *Pool) relearn(w *want) {
	wl := p.cfg.Workload
	tot := wl.Total()
	m := &p.fgd
	switch {
	case tot == 0 && m.builtAt < 0:
		p.buildFGD([]WeightedShape{{Shape: w.shape, Weight: 1}}, 0)
	case tot == 0:
	case m.builtAt <= 0, p.cfg.RelearnGrowth < 0, tot >= m.builtAt*(1+p.cfg.RelearnGrowth):
		if tot == m.builtAt {
			return
		}
		shapes := wl.Shapes()
		if len(shapes) > p.cfg.MaxShapes {
			shapes = shapes[:p.cfg.MaxShapes]
			var s float64
			for _, x := range shapes {
				s += x.Weight
			}
			for i := range shapes {
				shapes[i].Weight /= s
			}
		}
		p.buildFGD(shapes, tot)
	}
}

func (p *Pool) buildFGD(shapes []WeightedShape, at float64) {
	m := &p.fgd
	m.epoch++
	m.builtAt = at
	m.cpuOnly = 0
	m.groups = m.groups[:0]
	m.press = m.press[:0]
	byGPU := map[Shape]int{}
	for _, ws := range shapes {
		s := ws.Shape
		if s.GPUs == 0 {
			m.cpuOnly += ws.Weight
			continue
		}
		key := s
		key.CPUMilli, key.MemoryBytes = 0, 0
		gi, ok := byGPU[key]
		if !ok {
			gi = len(m.groups)
			byGPU[key] = gi
			g := fgdGroup{want: want{
				k: s.GPUs, milli: s.MilliGPU, vram: s.VRAM, minVRAM: s.MinVRAM,
				models: p.models.set(splitSet(s.Models)), archs: p.archs.set(splitSet(s.Archs)), minCC: s.MinCompute,
			}}
			g.want.anyGPU = g.want.models == nil && g.want.archs == nil && g.want.minCC.IsZero() && g.want.minVRAM == 0
			m.groups = append(m.groups, g)
		}
		g := &m.groups[gi]
		g.wsum += ws.Weight
		g.shapes = append(g.shapes, fgdShape{cpu: s.CPUMilli, mem: s.MemoryBytes, w: ws.Weight})
	}
	for _, n := range p.nodes {
		p.nodeEligibility(n)
	}
	p.scarcity()
}

// scarcity prices the cards by how contended they are. A group of shapes
// limited to some cards (a GPU model, an architecture, a memory size) can
// only use those; a card it may use is worth the group's demand over the
// free share of such cards, relative to the whole workload's demand over
// the pool's free share (read again with the workload, so the price of a
// model rises as it fills). A milli-GPU taken from a card costs the sum of
// the prices of the groups that may use it, times ScarcityWeight. FGD
// alone measures a node's fragments against the workload but is blind to
// this: a card that a constrained shape needs and an unconstrained one
// does not is spent on the first as readily as on the second, and the
// best-fit blend then favours small nodes, often the scarce models. With
// the price in the score, work that may go anywhere goes where the
// constrained work cannot.
func (p *Pool) scarcity() {
	m := &p.fgd
	m.press = m.press[:0]
	if p.scarcityWeight == 0 {
		return
	}
	var free, demand float64
	supply := make([]float64, len(m.groups))
	for _, n := range p.nodes {
		free += float64(n.res.freeMilli())
		for gi, e := range n.fgd.elig {
			for ; e != 0; e &= e - 1 {
				supply[gi] += float64(n.res.free[trailing(e)])
			}
		}
	}
	free = max(free, MilliPerGPU)
	for gi := range supply {
		supply[gi] = max(supply[gi], MilliPerGPU)
	}
	// need is a group's GPU demand per arrival; a share derived from VRAM
	// differs by card and counts as half a card.
	need := func(g *fgdGroup) float64 {
		milli := g.want.milli
		if milli == 0 {
			milli = MilliPerGPU / 2
		}
		return g.wsum * float64(g.want.k*milli)
	}
	for gi := range m.groups {
		demand += need(&m.groups[gi])
	}
	priced := false
	for gi := range m.groups {
		g := &m.groups[gi]
		pr := 0.0
		if !g.want.anyGPU && supply[gi] > 0 && demand > 0 {
			pr = (need(g) / supply[gi]) / (demand / free)
			priced = true
		}
		m.press = append(m.press, pr)
	}
	if !priced {
		m.press = m.press[:0]
	}
	for _, n := range p.nodes {
		p.nodePress(n)
	}
}

// nodePress prices n's cards from the groups' prices.
func (p *Pool) nodePress(n *nodeState) {
	f := &n.fgd
	f.press = f.press[:0]
	if len(p.fgd.press) == 0 {
		return
	}
	for range n.gpus {
		f.press = append(f.press, 0)
	}
	for gi, pr := range p.fgd.press {
		if pr == 0 {
			continue
		}
		for e := f.elig[gi]; e != 0; e &= e - 1 {
			f.press[trailing(e)] += pr
		}
	}
}

// price is the scarcity price of taking w on the cards in mask of n.
func (p *Pool) price(n *nodeState, w *want, mask uint64) float64 {
	if len(n.fgd.press) == 0 {
		return 0
	}
	var s float64
	for ; mask != 0; mask &= mask - 1 {
		i := trailing(mask)
		need, _ := w.need(&n.gpus[i])
		s += float64(need) * n.fgd.press[i]
	}
	return p.scarcityWeight * s
}

func (p *Pool) nodeEligibility(n *nodeState) {
	m := &p.fgd
	f := &n.fgd
	f.epoch = m.epoch
	f.elig = f.elig[:0]
	for gi := range m.groups {
		e, _ := n.eligible(&m.groups[gi].want)
		f.elig = append(f.elig, e)
	}
	if len(m.press) == len(m.groups) {
		p.nodePress(n)
	}
}

// frag is the fragmentation of node n holding resources r.
func (m *fgdModel) frag(n *nodeState, r *resources) float64 {
	total := 0
	for _, f := range r.free {
		total += f
	}
	if total == 0 {
		return 0
	}
	ft := float64(total)
	sum := m.cpuOnly * ft
	for gi := range m.groups {
		g := &m.groups[gi]
		fit, usable := 0, 0
		for e := n.fgd.elig[gi]; e != 0; e &= e - 1 {
			i := trailing(e)
			need := g.want.milli
			if need == 0 {
				var ok bool
				if need, ok = g.want.need(&n.gpus[i]); !ok {
					continue
				}
			}
			if r.free[i] >= need && (g.want.vram == 0 || r.vfree[i] >= g.want.vram) {
				fit++
				usable += r.free[i]
			}
		}
		if fit < g.want.k {
			sum += g.wsum * ft
			continue
		}
		under := float64(total - usable)
		for _, s := range g.shapes {
			if r.cpu >= s.cpu && r.mem >= s.mem {
				sum += s.w * under
			} else {
				sum += s.w * ft
			}
		}
	}
	return sum
}

// nodeFrag is n's current fragmentation, cached.
func (p *Pool) nodeFrag(n *nodeState) float64 {
	f := &n.fgd
	if f.epoch != p.fgd.epoch {
		p.nodeEligibility(n)
	}
	if f.fragVer != n.ver || f.fragEpoch != p.fgd.epoch {
		f.frag = p.fgd.frag(n, &n.res)
		f.fragVer, f.fragEpoch = n.ver, p.fgd.epoch
	}
	return f.frag
}

// fgdScore is the growth of n's fragmentation if it takes w, on the cards
// (among fit) where that growth is least, ties to the tightest card.
func (p *Pool) fgdScore(n *nodeState, w *want, fit uint64) (float64, uint64) {
	f := &n.fgd
	for len(f.cache) <= w.shapeID {
		f.cache = append(f.cache, fgdEntry{})
	}
	e := &f.cache[w.shapeID]
	if e.epoch == p.fgd.epoch && e.ver == n.ver {
		return e.delta, e.mask
	}
	before := p.nodeFrag(n)
	sc := &p.scratch
	best, bestMask := math.Inf(1), uint64(0)
	if w.k == 1 {
		// Cards with the same free share, memory and type score the same:
		// evaluate one of each.
		var tried [maxGPUsPerNode]int
		nt := 0
	next:
		for m := fit; m != 0; m &= m - 1 {
			i := trailing(m)
			for _, j := range tried[:nt] {
				if n.res.free[j] == n.res.free[i] && n.res.vfree[j] == n.res.vfree[i] &&
					n.model[j] == n.model[i] && n.arch[j] == n.arch[i] && n.gpus[j].VRAM == n.gpus[i].VRAM &&
					n.gpus[j].Compute == n.gpus[i].Compute {
					continue next
				}
			}
			tried[nt] = i
			nt++
			n.res.copyInto(sc)
			n.take(sc, w, 1<<i)
			d := p.fgd.frag(n, sc) - before + p.price(n, w, 1<<i)
			if bestMask == 0 || (!near(d, best) && d < best) ||
				(near(d, best) && n.res.free[i] < n.res.free[trailing(bestMask)]) {
				best, bestMask = d, 1<<i
			}
		}
	} else {
		mask, _ := n.pickGPUs(&n.res, w, fit, false)
		n.res.copyInto(sc)
		n.take(sc, w, mask)
		best, bestMask = p.fgd.frag(n, sc)-before+p.price(n, w, mask), mask
	}
	*e = fgdEntry{ver: n.ver, epoch: p.fgd.epoch, delta: best, mask: bestMask}
	return best, bestMask
}
