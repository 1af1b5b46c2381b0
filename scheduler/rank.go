package scheduler

import (
	"math"
	"math/bits"
)

func trailing(m uint64) int { return bits.TrailingZeros64(m) }

// rank orders feasible placements, most important key first; lower wins.
type rank struct {
	// topo is 0 when the replica's GPUs are all joined by NVLink (always
	// for one GPU or none), 1 when some pair talks over PCIe.
	topo int
	// score is the policy's scorer (fgd: fragmentation growth; bestfit:
	// what is left; worstfit: minus what is left; firstfit: node order;
	// random: a draw).
	score float64
	// local is 0 when the node holds the request's model weights.
	local int
	// price per GPU-hour: the cheaper of two equal nodes wins.
	price float64
	// second is the fit score, FGD's tie-break.
	second float64
	// idx is the node's position in the snapshot: the last tie-break, so
	// that plans are deterministic.
	idx int
}

// near reports whether two float scores are equal up to rounding.
func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b))
}

func (a rank) better(b rank) bool {
	if a.topo != b.topo {
		return a.topo < b.topo
	}
	if !near(a.score, b.score) {
		return a.score < b.score
	}
	if a.local != b.local {
		return a.local < b.local
	}
	if a.price != b.price {
		return a.price < b.price
	}
	if !near(a.second, b.second) {
		return a.second < b.second
	}
	return a.idx < b.idx
}

// fitScore is what node n would have left after taking w on the cards in
// mask: half free CPU, half free GPU share, each over the largest node's.
// Lower is a tighter fit (the best-fit scorer).
func (p *Pool) fitScore(n *nodeState, r *resources, w *want, mask uint64) float64 {
	left := r.freeMilli()
	for m := mask; m != 0; m &= m - 1 {
		need, _ := w.need(&n.gpus[trailing(m)])
		left -= need
	}
	return 0.5*float64(r.cpu-w.cpu)/p.maxCPU + 0.5*float64(left)/p.maxGPU
}

// pickGPUs chooses w.k cards among fit on node n: for one card the tightest
// (or, with worst set, the loosest) fit; for several, a set joined by
// NVLink where the node has one, else the tightest cards. linked says
// whether every pair of the set is joined by NVLink.
func (n *nodeState) pickGPUs(r *resources, w *want, fit uint64, worst bool) (mask uint64, linked bool) {
	if w.k == 0 {
		return 0, true
	}
	var order [maxGPUsPerNode]int
	c := 0
	for m := fit; m != 0; m &= m - 1 {
		order[c] = trailing(m)
		c++
	}
	// Insertion sort by free share (ties: index): at most 64 cards.
	for i := 1; i < c; i++ {
		for j := i; j > 0; j-- {
			a, b := order[j-1], order[j]
			fa, fb := r.free[a], r.free[b]
			if worst {
				fa, fb = -fa, -fb
			}
			if fa < fb || (fa == fb && a < b) {
				break
			}
			order[j-1], order[j] = b, a
		}
	}
	if w.k == 1 {
		return 1 << order[0], true
	}
	if !n.anyLink {
		for _, i := range order[:w.k] {
			mask |= 1 << i
		}
		return mask, false
	}
	// Grow a set from each seed, adding the card with most NVLinks into
	// the set; keep the set with all pairs linked, else the most links.
	bestLinks := -1
	for _, seed := range order[:c] {
		set := uint64(1) << seed
		links := 0
		for popcount(set) < w.k {
			pick, pickLinks := -1, -1
			for _, i := range order[:c] {
				if set&(1<<i) != 0 {
					continue
				}
				if l := popcount(n.nvlink[i] & set); l > pickLinks {
					pick, pickLinks = i, l
				}
			}
			set |= 1 << pick
			links += pickLinks
		}
		if links > bestLinks {
			mask, bestLinks = set, links
		}
		if bestLinks == w.k*(w.k-1)/2 {
			break
		}
	}
	return mask, bestLinks == w.k*(w.k-1)/2
}

// allLinked reports whether every pair of cards in mask is joined by NVLink.
func (n *nodeState) allLinked(mask uint64) bool {
	if popcount(mask) <= 1 {
		return true
	}
	for m := mask; m != 0; m &= m - 1 {
		i := trailing(m)
		if (n.nvlink[i]|1<<i)&mask != mask {
			return false
		}
	}
	return true
}

// take subtracts w on the cards in mask from r.
func (n *nodeState) take(r *resources, w *want, mask uint64) {
	r.cpu -= w.cpu
	r.mem -= w.mem
	if w.disk > 0 && !n.cached[w.modelID] {
		r.disk -= w.disk
	}
	for m := mask; m != 0; m &= m - 1 {
		i := trailing(m)
		need, _ := w.need(&n.gpus[i])
		r.free[i] -= need
		if w.vram > 0 {
			r.vfree[i] -= w.vram
		}
	}
}

// slot describes w on the cards in mask of node n.
func (n *nodeState) slot(w *want, mask uint64) Slot {
	s := Slot{Node: n.id, CPUMilli: w.cpu, MemoryBytes: w.mem}
	if w.disk > 0 && !n.cached[w.modelID] {
		s.DiskBytes = w.disk
	}
	for m := mask; m != 0; m &= m - 1 {
		i := trailing(m)
		need, _ := w.need(&n.gpus[i])
		s.GPUs = append(s.GPUs, GPUShare{Index: i, UUID: n.gpus[i].UUID, Milli: need, VRAM: w.vram})
	}
	return s
}
