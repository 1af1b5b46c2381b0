package scheduler

import (
	"fmt"
	"sort"
)

// Place builds a pool from a snapshot and places one request: the one-shot
// form of Pool.Place.
func Place(nodes []Node, r Request, cfg Config) (Plan, error) {
	p, err := NewPool(nodes, cfg)
	if err != nil {
		return Plan{}, err
	}
	return p.Place(r)
}

// Place decides where the replicas of r go. It changes nothing in the pool
// (apply the plan with Commit); the Random policy's draws are the only state
// it advances.
//
// Each replica runs the pipeline: filters on every node (see check), then
// the policy ranks the nodes that passed (see rank), and the best one takes
// the replica. Replicas after the first see the earlier ones placed. When
// no node fits a replica: a multi-GPU replica with CrossNode spans nodes,
// then an Inference request may evict Batch work of lower priority.
//
// Errors: ErrInvalidRequest; a *Refusal (ErrNoFit or ErrNeverFits) when
// nothing fits (for a Gang, when any member does not); ErrPartial wrapping
// the refusal when a request without Gang got only some replicas, together
// with the plan for those.
func (p *Pool) Place(r Request) (Plan, error) {
	w, err := p.compile(r)
	if err != nil {
		return Plan{}, err
	}
	if p.cfg.Policy == FGD {
		p.relearn(&w)
	}
	n := max(1, r.Replicas)
	plan := Plan{Request: r.ID, Class: r.Class, Priority: r.Priority}
	var undo []undoRecord
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			u := undo[i]
			u.node.res, u.node.allocs = u.res, u.allocs
			u.node.ver++
		}
	}()
	for i := 0; i < n; i++ {
		rep, evs, ref := p.placeOne(&w)
		if ref != nil {
			ref.Request, ref.Replica = r.ID, i
			if r.Gang || i == 0 {
				return Plan{}, ref
			}
			return plan, fmt.Errorf("%w: %d of %d replicas: %w", ErrPartial, i, n, ref)
		}
		plan.Replicas = append(plan.Replicas, rep)
		plan.Evictions = append(plan.Evictions, evs...)
		if i < n-1 {
			undo = p.tentative(undo, &w, rep, evs)
		}
	}
	return plan, nil
}

type undoRecord struct {
	node   *nodeState
	res    resources
	allocs []Allocation
}

// tentative applies one replica (and its evictions) so that the next
// replica sees it; Place undoes it before returning.
func (p *Pool) tentative(undo []undoRecord, w *want, rep Replica, evs []Eviction) []undoRecord {
	save := func(n *nodeState) {
		undo = append(undo, undoRecord{node: n, res: n.res.clone(), allocs: append([]Allocation(nil), n.allocs...)})
	}
	for _, e := range evs {
		n := p.nodes[p.index[e.Node]]
		save(n)
		for j, a := range n.allocs {
			if a.ID == e.Allocation {
				release(n, &n.res, a)
				n.allocs = append(n.allocs[:j:j], n.allocs[j+1:]...)
				break
			}
		}
		n.ver++
	}
	for _, s := range rep.Slots {
		n := p.nodes[p.index[s.Node]]
		save(n)
		var mask uint64
		for _, g := range s.GPUs {
			mask |= 1 << g.Index
		}
		n.take(&n.res, w, mask)
		n.ver++
	}
	return undo
}

// placeOne places one replica of w on the pool as it stands.
func (p *Pool) placeOne(w *want) (Replica, []Eviction, *Refusal) {
	best := -1
	var bestRank rank
	var bestMask uint64
	var counts [16]int
	closest, closestStage := -1, 0
	feasible := 0
	for i, n := range p.nodes {
		why, fit := n.check(&n.res, w, false)
		if why != "" {
			st := stage[why]
			counts[st]++
			if st > closestStage || st == closestStage && larger(n, p.nodes[closest]) {
				closest, closestStage = i, st
			}
			continue
		}
		feasible++
		rk := rank{idx: i, price: n.price}
		if w.modelID != "" && !n.cached[w.modelID] {
			rk.local = 1
		}
		var mask uint64
		switch p.cfg.Policy {
		case FGD:
			rk.score, mask = p.fgdScore(n, w, fit)
			rk.second = p.fitScore(n, &n.res, w, mask)
			rk.score += p.fitWeight * rk.second
		case BestFit:
			mask, _ = n.pickGPUs(&n.res, w, fit, false)
			rk.score = p.fitScore(n, &n.res, w, mask)
		case WorstFit:
			mask, _ = n.pickGPUs(&n.res, w, fit, true)
			rk.score = -p.fitScore(n, &n.res, w, mask)
		case FirstFit:
			mask, _ = n.pickGPUs(&n.res, w, fit, false)
			rk.score = float64(i)
		case Random:
			mask = p.randomGPUs(n, w, fit)
			rk.score = p.rng.Float64()
		}
		if !n.allLinked(mask) {
			rk.topo = 1
		}
		if best < 0 || rk.better(bestRank) {
			best, bestRank, bestMask = i, rk, mask
		}
		if p.cfg.Policy == FirstFit && rk.topo == 0 {
			break
		}
	}
	if best >= 0 {
		n := p.nodes[best]
		return Replica{Slots: []Slot{n.slot(w, bestMask)}, NVLink: w.k > 1 && bestRank.topo == 0}, nil, nil
	}
	if w.k > 1 && w.crossNode {
		if rep, ok := p.spanNodes(w); ok {
			return rep, nil, nil
		}
	}
	if w.class == Inference {
		if rep, evs, ok := p.preempt(w); ok {
			return rep, evs, nil
		}
	}
	return Replica{}, nil, p.refuse(w, counts, closest)
}

// refuse explains why w fits nowhere: with the nodes as they are, or (when
// even empty nodes would not do) ever.
func (p *Pool) refuse(w *want, counts [16]int, closest int) *Refusal {
	ref := &Refusal{Filtered: map[Reason]int{}}
	if len(p.nodes) == 0 {
		ref.Never, ref.Reason = true, ReasonNoNodes
		return ref
	}
	// Judge the empty pool: if no node could take w even then, say so and
	// name the constraint that stopped the closest node.
	neverClosest, neverStage := -1, 0
	var neverWhy Reason
	all := true
	for i, n := range p.nodes {
		why, _ := n.check(&n.res, w, true)
		if why == "" {
			all = false
			break
		}
		if st := stage[why]; st > neverStage || st == neverStage && larger(n, p.nodes[neverClosest]) {
			neverClosest, neverStage, neverWhy = i, st, why
		}
	}
	if all {
		for _, n := range p.nodes {
			why, _ := n.check(&n.res, w, true)
			ref.Filtered[why]++
		}
		n := p.nodes[neverClosest]
		ref.Never, ref.Reason, ref.Closest = true, neverWhy, n.id
		ref.Lacked = n.explain(&n.res, w, true, neverWhy)
		return ref
	}
	for why, st := range stage {
		if counts[st] > 0 {
			ref.Filtered[why] = counts[st]
		}
	}
	n := p.nodes[closest]
	why, _ := n.check(&n.res, w, false)
	ref.Reason, ref.Closest = why, n.id
	ref.Lacked = n.explain(&n.res, w, false, why)
	return ref
}

// spanNodes places one multi-GPU replica on cards of several nodes, the
// nodes with most fitting cards first.
func (p *Pool) spanNodes(w *want) (Replica, bool) {
	one := *w
	one.k = 1
	type part struct {
		i   int
		fit uint64
	}
	var parts []part
	total := 0
	for i, n := range p.nodes {
		if why, fit := n.check(&n.res, &one, false); why == "" {
			parts = append(parts, part{i, fit})
			total += popcount(fit)
		}
	}
	if total < w.k {
		return Replica{}, false
	}
	sort.SliceStable(parts, func(a, b int) bool { return popcount(parts[a].fit) > popcount(parts[b].fit) })
	var rep Replica
	left := w.k
	for _, pt := range parts {
		if left == 0 {
			break
		}
		n := p.nodes[pt.i]
		sub := *w
		sub.k = min(left, popcount(pt.fit))
		mask, _ := n.pickGPUs(&n.res, &sub, pt.fit, false)
		rep.Slots = append(rep.Slots, n.slot(&sub, mask))
		left -= sub.k
	}
	return rep, true
}

// randomGPUs draws w.k of the cards in fit (the Random policy's choice
// inside a node), keeping NVLink sets where the node has them.
func (p *Pool) randomGPUs(n *nodeState, w *want, fit uint64) uint64 {
	if w.k != 1 || popcount(fit) == 1 {
		mask, _ := n.pickGPUs(&n.res, w, fit, false)
		return mask
	}
	j := p.rng.IntN(popcount(fit))
	m := fit
	for ; j > 0; j-- {
		m &= m - 1
	}
	return 1 << trailing(m)
}
