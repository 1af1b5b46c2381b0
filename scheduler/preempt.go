package scheduler

import "sort"

// preempt finds the cheapest set of Batch allocations of lower priority
// whose eviction lets one replica of the Inference request w fit, over all
// nodes: least total cost, then fewest victims, then node order.
//
// Per node it evicts candidates cheapest first (larger GPU holdings first
// among equals) until w fits, then drops any victim the fit does not need,
// most costly first. That is a greedy answer to a knapsack-like problem;
// the set it returns is minimal (no victim can be spared) though not always
// the cheapest possible.
func (p *Pool) preempt(w *want) (Replica, []Eviction, bool) {
	type choice struct {
		node    int
		victims []Allocation
		cost    float64
		res     resources
	}
	var best *choice
	for i, n := range p.nodes {
		if why, _ := n.check(&n.res, w, true); why != "" {
			continue
		}
		var cands []Allocation
		for _, a := range n.allocs {
			if a.Class == Batch && a.Priority < w.priority {
				cands = append(cands, a)
			}
		}
		if len(cands) == 0 {
			continue
		}
		sort.SliceStable(cands, func(a, b int) bool {
			if cands[a].Cost != cands[b].Cost {
				return cands[a].Cost < cands[b].Cost
			}
			return heldMilli(cands[a]) > heldMilli(cands[b])
		})
		r := n.res.clone()
		var chosen []Allocation
		fits := false
		for _, a := range cands {
			release(n, &r, a)
			chosen = append(chosen, a)
			if why, _ := n.check(&r, w, false); why == "" {
				fits = true
				break
			}
		}
		if !fits {
			continue
		}
		// Spare the victims the fit does not need, most costly first.
		for j := len(chosen) - 1; j >= 0 && len(chosen) > 1; j-- {
			t := n.res.clone()
			for k, a := range chosen {
				if k != j {
					release(n, &t, a)
				}
			}
			if why, _ := n.check(&t, w, false); why == "" {
				chosen = append(chosen[:j:j], chosen[j+1:]...)
				r = t
			}
		}
		c := &choice{node: i, victims: chosen, res: r}
		for _, a := range chosen {
			c.cost += a.Cost
		}
		if best == nil || c.cost < best.cost || (c.cost == best.cost && len(c.victims) < len(best.victims)) {
			best = c
		}
	}
	if best == nil {
		return Replica{}, nil, false
	}
	n := p.nodes[best.node]
	_, fit := n.check(&best.res, w, false)
	mask, linked := n.pickGPUs(&best.res, w, fit, false)
	evs := make([]Eviction, len(best.victims))
	for j, a := range best.victims {
		evs[j] = Eviction{Node: n.id, Allocation: a.ID, Cost: a.Cost}
	}
	return Replica{Slots: []Slot{n.slot(w, mask)}, NVLink: w.k > 1 && linked}, evs, true
}

func heldMilli(a Allocation) int {
	t := 0
	for _, g := range a.GPUs {
		t += g.Milli
	}
	return t
}
