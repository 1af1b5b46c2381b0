package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
)

// planner places the deployments of one step against one scheduler pool,
// so that each sees the replicas placed before it in the same step.
type planner struct {
	c     *Coordinator
	nodes []scheduler.Node
	now   time.Time
	pool  *scheduler.Pool
	err   error
	// yielded are the other coordinators' deployments this step left
	// capacity to (fairshare.go).
	yielded []string
}

// snapshot is node n as the coordinator believes it now: its record,
// overlaid with the free capacity it reported recently.
func (p *planner) snapshot(n scheduler.Node) scheduler.Node {
	if f, ok := p.c.learnedOf(n.ID); ok {
		f.apply(&n)
	}
	return n
}

func (p *planner) ensure() error {
	if p.pool != nil || p.err != nil {
		return p.err
	}
	snap := make([]scheduler.Node, len(p.nodes))
	for i, n := range p.nodes {
		snap[i] = p.snapshot(n)
	}
	p.pool, p.err = scheduler.NewPool(snap, p.c.cfg.Scheduler)
	return p.err
}

// place puts up to missing more replicas of r on nodes: plan, reserve,
// commit; on a refusal it refreshes the refusing node's view from the
// node's answer and plans again, up to Attempts times. It returns the
// deployment's state and reason (the replicas are filled in by the caller).
func (p *planner) place(ctx context.Context, r Record, st *depState, missing int) Status {
	if err := p.ensure(); err != nil {
		return Status{State: StateQueued, Reason: err.Error()}
	}
	if len(r.Spec.Avoid) > 0 {
		return p.placeAvoiding(ctx, r, st, missing)
	}
	req := r.Spec.Request
	req.ID = r.ID
	p.pool.Observe(req)
	var last error
	for attempt := 0; attempt <= p.c.cfg.Attempts && missing > 0; attempt++ {
		req.Replicas = missing
		plan, err := p.pool.Place(req)
		last = err
		if len(plan.Replicas) == 0 || (err != nil && !errors.Is(err, scheduler.ErrPartial)) {
			break
		}
		placed, refused := p.reserve(ctx, r, st, plan, nil)
		missing -= placed
		if len(refused) == 0 {
			break // placed all the plan held; err says why not more
		}
		last = refused[0]
		for _, e := range refused {
			var rf *Refused
			if errors.As(e, &rf) {
				p.refresh(rf.Node)
			}
		}
	}
	var ref *scheduler.Refusal
	if missing > 0 && req.Class == scheduler.Inference && errors.As(last, &ref) && !ref.Never {
		req.Replicas = missing
		placed, err := p.preempt(ctx, r, st, req)
		missing -= placed
		if err != nil && placed == 0 {
			last = err
		}
	}
	if missing <= 0 {
		return Status{State: StatePlaced}
	}
	if errors.As(last, &ref) {
		p.c.cfg.Metrics.Refused(string(ref.Reason))
	}
	return statusOf(last)
}

// preempt places the replicas of an inference request that fit nowhere by
// evicting batch work of lower priority: it learns what the nodes hold
// (listing them at most once per ResyncEvery), lets the scheduler choose
// the least costly victims, and reserves each slot together with the
// victims on its node, which the node's ledger evicts only if they are
// evictable and the slot then fits. The victims' deployments lose those
// replicas; their coordinators find the reservations gone and queue them
// again until capacity returns. It returns how many replicas it placed.
func (p *planner) preempt(ctx context.Context, r Record, st *depState, req scheduler.Request) (int, error) {
	held := p.c.holdings(ctx, p.nodes)
	nodes := p.pool.Nodes()
	for i := range nodes {
		nodes[i].Allocations = allocationsOf(nodes[i], held[nodes[i].ID], p.now)
	}
	pool, err := scheduler.NewPool(nodes, p.c.cfg.Scheduler)
	if err != nil {
		return 0, err
	}
	plan, err := pool.Place(req)
	if len(plan.Replicas) == 0 || len(plan.Evictions) == 0 {
		return 0, err
	}
	evict := map[string][]string{}
	for _, e := range plan.Evictions {
		evict[e.Node] = append(evict[e.Node], e.Allocation)
	}
	placed, refused := p.reserve(ctx, r, st, plan, evict)
	for _, n := range plan.Nodes() {
		p.refresh(n)
	}
	if len(refused) > 0 && placed == 0 {
		return 0, refused[0]
	}
	return placed, nil
}

// allocationsOf turns what node n holds into the scheduler's allocations:
// class and priority as reserved, cards by UUID, and a cost that grows
// with the share held and the time it has run (as the ledger counts it).
func allocationsOf(n scheduler.Node, held []Reservation, now time.Time) []scheduler.Allocation {
	index := map[string]int{}
	for i, g := range n.GPUs {
		index[g.UUID] = i
	}
	out := make([]scheduler.Allocation, 0, len(held))
	for _, h := range held {
		a := scheduler.Allocation{ID: h.ID, Class: scheduler.Inference, Priority: h.Priority, CPUMilli: h.Slot.CPUMilli, MemoryBytes: h.Slot.MemoryBytes}
		if h.Class == scheduler.Batch.String() {
			a.Class = scheduler.Batch
		}
		var milli int
		for _, g := range h.Slot.GPUs {
			i, ok := index[g.UUID]
			if !ok {
				continue
			}
			a.GPUs = append(a.GPUs, scheduler.GPUShare{Index: i, UUID: g.UUID, Milli: g.Milli, VRAM: g.VRAM})
			milli += g.Milli
		}
		age := 0.0
		if !h.Since.IsZero() && now.After(h.Since) {
			age = now.Sub(h.Since).Seconds()
		}
		a.Cost = float64(milli+1) * (age + 1)
		out = append(out, a)
	}
	return out
}

// placeAvoiding places r in a pool of the step's nodes without those of
// r.Spec.Avoid, then copies what that pool committed back into the step's
// pool, so the deployments after r see it.
func (p *planner) placeAvoiding(ctx context.Context, r Record, st *depState, missing int) Status {
	var keep []scheduler.Node
	for _, n := range p.pool.Nodes() {
		if !slices.Contains(r.Spec.Avoid, n.ID) {
			keep = append(keep, n)
		}
	}
	if len(keep) == 0 {
		return Status{State: StateQueued, Reason: "every node is avoided"}
	}
	sub, err := scheduler.NewPool(keep, p.c.cfg.Scheduler)
	if err != nil {
		return Status{State: StateQueued, Reason: err.Error()}
	}
	main := p.pool
	p.pool = sub
	r.Spec.Avoid = nil
	s := p.place(ctx, r, st, missing)
	p.pool = main
	for _, n := range sub.Nodes() {
		_ = main.Update(n)
	}
	return s
}

// refresh replaces node id in the pool with what it last reported; a node
// that did not answer is taken as full for the rest of the step.
func (p *planner) refresh(id string) {
	for _, n := range p.nodes {
		if n.ID != id {
			continue
		}
		if _, ok := p.c.learnedOf(id); ok {
			_ = p.pool.Update(p.snapshot(n))
			return
		}
		full := n
		full.GPUs = append([]scheduler.GPU(nil), n.GPUs...)
		for i := range full.GPUs {
			full.GPUs[i].FreeMilli, full.GPUs[i].FreeVRAM = 0, 0
		}
		full.CPUMilli, full.MemoryBytes = 0, 0
		_ = p.pool.Update(full)
		return
	}
}

// statusOf turns why a placement stopped into a status.
func statusOf(err error) Status {
	var ref *scheduler.Refusal
	var rf *Refused
	switch {
	case errors.As(err, &ref):
		s := Status{State: StateQueued, Reason: string(ref.Reason), Closest: ref.Closest, Detail: ref.Error()}
		if ref.Never {
			s.State = StateFailed
		}
		return s
	case errors.As(err, &rf):
		return Status{State: StateQueued, Reason: "refused by node: " + rf.Resource, Closest: rf.Node, Detail: rf.Error()}
	case err != nil:
		return Status{State: StateQueued, Reason: "placement error", Detail: err.Error()}
	default:
		return Status{State: StateQueued, Reason: "waiting for capacity"}
	}
}

// reserve holds the plan's replicas on their nodes and commits them: each
// replica on its own, or for a gang all replicas or none. It records what
// it committed in st and in the step's pool, and returns how many replicas
// it placed and the refusals (or unreachable nodes) it met. The reserve
// calls on a node also name evict[node] (nil: none), the reservations the
// node may evict to make room; what the nodes evicted is forgotten by the
// deployments this coordinator owns.
func (p *planner) reserve(ctx context.Context, r Record, st *depState, plan scheduler.Plan, evict map[string][]string) (int, []error) {
	c := p.c
	groups := make([][]scheduler.Replica, 0, len(plan.Replicas))
	if r.Spec.Request.Gang {
		groups = append(groups, plan.Replicas)
	} else {
		for _, rep := range plan.Replicas {
			groups = append(groups, []scheduler.Replica{rep})
		}
	}
	placed := 0
	var refused []error
	var done []scheduler.Replica
	for _, g := range groups {
		var held []Reservation
		var fail error
		for _, rep := range g {
			rid := c.newReplicaID(r.ID, p.now)
			for i, slot := range rep.Slots {
				res := Reservation{
					ID:         fmt.Sprintf("%s#%d/%d", rid, i, len(rep.Slots)),
					Deployment: r.ID,
					Holder:     c.cfg.Self,
					Priority:   r.Spec.Request.Priority,
					Class:      r.Spec.Request.Class.String(),
					Slot:       slot,
				}
				a, err := c.call(ctx, slot.Node, Call{Op: OpReserve, Reservation: &res, LeaseMillis: c.cfg.HoldLease.Milliseconds(), Evict: evict[slot.Node]})
				c.evicted(slot.Node, a.Evicted)
				switch {
				case err != nil:
					fail = &Refused{Node: slot.Node, Resource: "unreachable", Want: 0, Free: 0}
					c.mu.Lock()
					delete(c.learned, slot.Node)
					c.mu.Unlock()
				case a.Refused != nil:
					rf := *a.Refused
					rf.Node = slot.Node
					fail = &rf
				default:
					res.State = Held
					held = append(held, res)
				}
				if fail != nil {
					break
				}
			}
			if fail != nil {
				break
			}
		}
		if fail == nil {
			fail = p.commit(ctx, held)
		}
		if fail != nil {
			p.release(ctx, held)
			refused = append(refused, fail)
			var rf *Refused
			if errors.As(fail, &rf) {
				c.cfg.Metrics.Refused("node: " + rf.Resource)
			}
			if r.Spec.Request.Gang {
				break
			}
			continue
		}
		for _, res := range held {
			res.State = Committed
			st.res[res.ID] = res
		}
		st.lastRenew = p.now
		placed += len(g)
		done = append(done, g...)
		c.cfg.Metrics.Placed(string(p.pool.Policy()), len(g))
	}
	if len(done) > 0 {
		_ = p.pool.Commit(scheduler.Plan{Request: r.ID, Class: plan.Class, Priority: plan.Priority, Replicas: done})
	}
	return placed, refused
}

// commit commits held reservations, node by node.
func (p *planner) commit(ctx context.Context, held []Reservation) error {
	c := p.c
	byNode := map[string][]string{}
	var order []string
	for _, r := range held {
		if byNode[r.Slot.Node] == nil {
			order = append(order, r.Slot.Node)
		}
		byNode[r.Slot.Node] = append(byNode[r.Slot.Node], r.ID)
	}
	for _, node := range order {
		a, err := c.call(ctx, node, Call{Op: OpCommit, IDs: byNode[node], LeaseMillis: c.cfg.CommitLease.Milliseconds()})
		if err != nil {
			return &Refused{Node: node, Resource: "unreachable"}
		}
		if len(a.Unknown) > 0 {
			return &Refused{Node: node, Resource: "lease expired before commit"}
		}
	}
	return nil
}

// release gives held reservations back.
func (p *planner) release(ctx context.Context, held []Reservation) {
	byNode := map[string][]string{}
	for _, r := range held {
		byNode[r.Slot.Node] = append(byNode[r.Slot.Node], r.ID)
	}
	for node, ids := range byNode {
		_, _ = p.c.call(ctx, node, Call{Op: OpRelease, IDs: ids})
	}
}
