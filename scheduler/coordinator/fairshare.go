package coordinator

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
)

// Fair share under contention.
//
// Every deployment has its own coordinator, so when a card frees up the
// coordinators of all the deployments waiting for it see it free at about
// the same time, and without more the one that steps first claims it. The
// pool should instead give it to the deployment whose owner deserves it
// most (market.Order: the smallest GPU share held per fair-share weight,
// where identities that served more than they consumed weigh more).
//
// No new protocol is needed for that, because every member already holds
// every deployment record (the spec with its Owner, the status with its
// replicas) and its own copy of the credits ledger. Each coordinator
// therefore orders, in every step, all waiting deployments of the pool,
// its own and the others' (Config.FairShare, within a priority), and walks
// that order over its snapshot of the pool: its own deployments it places
// for real; another coordinator's it places only in the snapshot, so the
// capacity that deployment would take is not claimed here. A deployment of
// its own that then finds nothing free, but would fit if it did not yield,
// stays queued with ReasonFairShare while the other coordinators claim
// what they are owed.
//
// Never idle: nothing is held back when no other waiting deployment fits
// the free capacity (a lone newcomer is placed at once, as before), and a
// yield lasts at most Config.YieldFor. The coordinators' views differ a
// little (records and ledgers converge over gossip), so the one that should
// claim may not; after YieldFor the yielding deployment goes first in its
// coordinator's order and claims the capacity itself. Node-local admission
// still decides every claim, so fair share can reorder placements but
// never oversell a card.

// DefaultYieldFor: how long a deployment leaves capacity it fits in to
// deployments with a larger fair share. It must cover a coordinator step
// (250 ms in the daemon) plus the time a status or free capacity takes to
// reach every member; it is also the longest a card stays idle because the
// coordinator that should have claimed it did not.
const DefaultYieldFor = 2 * time.Second

// ReasonFairShare is the reason of a deployment that waits while
// deployments of owners with a larger fair share take capacity it fits in.
const ReasonFairShare = "waiting for deployments with a larger fair share"

// Waiting is a deployment with replicas to place, as fair share sees it.
type Waiting struct {
	ID    string // deployment ID
	Owner string // Spec.Owner: the identity that submitted it
	// Milli is the GPU share it still misses: replicas × GPUs × share.
	Milli int64
	// Arrival orders an owner's deployments: Spec.Updated in Unix
	// milliseconds, the same on every member.
	Arrival uint64
}

// FairShare orders deployments of one priority that wait for capacity,
// the first to serve first. held is the GPU share (milli) the placed
// replicas of each owner hold. It must be deterministic and return every
// deployment it was given exactly once; node passes market.Order over its
// view of the credits ledger.
type FairShare func(waiting []Waiting, held map[string]int64) []Waiting

// item is one deployment in a step's order.
type item struct {
	rec     Record
	owned   bool
	missing int // replicas to place (for a gang, all of them)
	rank    int // -2: owned, nothing to place; -1: done yielding; else fair-share rank
}

// order is the step's work: the owned records and, when fair share is on,
// the other coordinators' waiting deployments that rank ahead of an owned
// waiting one. Higher priority first; within a priority owned records with
// nothing to place, then those that yielded for YieldFor, then the waiting
// ones in fair-share order; then by ID. Every member computes the same
// order from the same records and ledger.
func (c *Coordinator) order(now time.Time, owned, recs []Record) []item {
	items := make([]item, 0, len(owned))
	for _, r := range owned {
		it := item{rec: r, owned: true, rank: -2}
		if st := c.deps[r.ID]; c.cfg.FairShare != nil && !r.Spec.Deleted {
			complete, _ := replicas(st.res)
			it.missing = missingOf(r, len(complete))
			if it.missing > 0 {
				it.rank = 0
				if !st.yieldSince.IsZero() && now.Sub(st.yieldSince) >= c.cfg.YieldFor {
					it.rank = -1
				}
			}
		}
		items = append(items, it)
	}
	if c.cfg.FairShare != nil && c.anyWaiting(items) {
		ownedSet := map[string]bool{}
		for _, r := range owned {
			ownedSet[r.ID] = true
		}
		for _, r := range recs {
			if ownedSet[r.ID] || r.Spec.Deleted || r.Status.State == StateFailed || r.Status.State == StateDeleted {
				continue
			}
			if m := missingOf(r, len(r.Status.Replicas)); m > 0 {
				items = append(items, item{rec: r, missing: m})
			}
		}
		c.rank(items, recs)
	}
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if pa, pb := a.rec.Spec.Request.Priority, b.rec.Spec.Request.Priority; pa != pb {
			return pa > pb
		}
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		return a.rec.ID < b.rec.ID
	})
	// Other coordinators' deployments after the last owned waiting one
	// change nothing here.
	last := -1
	for i, it := range items {
		if it.owned && it.missing > 0 {
			last = i
		}
	}
	out := items[:0]
	for i, it := range items {
		if it.owned || i < last {
			out = append(out, it)
		}
	}
	return out
}

func (c *Coordinator) anyWaiting(items []item) bool {
	for _, it := range items {
		if it.missing > 0 {
			return true
		}
	}
	return false
}

// rank numbers the waiting items of each priority in FairShare order;
// those done yielding keep rank -1.
func (c *Coordinator) rank(items []item, recs []Record) {
	held := map[string]int64{}
	for _, r := range recs {
		if r.Spec.Deleted {
			continue
		}
		for _, rep := range r.Status.Replicas {
			for _, s := range rep.Slots {
				for _, g := range s.GPUs {
					held[r.Spec.Owner] += int64(max(g.Milli, 0))
				}
			}
		}
	}
	byPrio := map[int][]Waiting{}
	index := map[string]int{}
	for i, it := range items {
		if it.missing <= 0 || it.rank == -1 {
			continue
		}
		p := it.rec.Spec.Request.Priority
		byPrio[p] = append(byPrio[p], Waiting{
			ID: it.rec.ID, Owner: it.rec.Spec.Owner, Milli: int64(it.missing) * milliOf(it.rec.Spec.Request),
			Arrival: uint64(max(it.rec.Spec.Updated.UnixMilli(), 0)),
		})
		index[it.rec.ID] = i
	}
	for _, ws := range byPrio {
		sort.Slice(ws, func(i, j int) bool { return ws[i].ID < ws[j].ID })
		for n, w := range c.cfg.FairShare(ws, held) {
			if i, ok := index[w.ID]; ok {
				items[i].rank = n
				delete(index, w.ID)
			}
		}
	}
	for _, i := range index { // a FairShare that dropped one: last, by ID
		items[i].rank = len(items)
	}
}

// missingOf is how many replicas r still needs with have of them placed; a
// gang that misses any needs all.
func missingOf(r Record, have int) int {
	want := r.Spec.Desired()
	if want <= have {
		return 0
	}
	if r.Spec.Request.Gang {
		return want
	}
	return want - have
}

// milliOf is one replica's GPU share in milli-GPU (a VRAM-sized share
// counts as a whole card here: the order only needs it roughly).
func milliOf(r scheduler.Request) int64 {
	m := r.MilliGPU
	if m <= 0 || m > scheduler.MilliPerGPU {
		m = scheduler.MilliPerGPU
	}
	return int64(max(r.GPUs, 0) * m)
}

// yieldTo takes, in the step's snapshot only, the capacity that another
// coordinator's waiting deployment r would get, so that the owned
// deployments after it in the fair-share order leave it alone.
func (p *planner) yieldTo(r Record, missing int) {
	if p.ensure() != nil {
		return
	}
	req := r.Spec.Request
	req.ID, req.Replicas = r.ID, missing
	plan, _ := p.pool.Place(req)
	if len(plan.Replicas) == 0 || (req.Gang && len(plan.Replicas) < missing) {
		return
	}
	if p.pool.Commit(plan) == nil {
		p.yielded = append(p.yielded, r.ID)
	}
}

// yielding turns the status of an owned deployment that stayed queued into
// a fair-share wait when it would have fitted but for the deployments it
// yielded to, and keeps the time its yield began.
func (c *Coordinator) yielding(now time.Time, r Record, s Status, pl *planner) Status {
	st := c.deps[r.ID]
	if st == nil {
		return s
	}
	if s.State != StateQueued || len(pl.yielded) == 0 || !pl.fitsAlone(r, st) {
		st.yieldSince = time.Time{}
		return s
	}
	if st.yieldSince.IsZero() {
		st.yieldSince = now
	}
	ahead := pl.yielded
	if len(ahead) > 3 {
		ahead = append(ahead[:3:3], fmt.Sprintf("%d more", len(pl.yielded)-3))
	}
	s.Reason, s.Closest = ReasonFairShare, ""
	s.Detail = fmt.Sprintf("free capacity goes first to %s; it claims it itself %v after it began to wait", strings.Join(ahead, ", "), c.cfg.YieldFor)
	return s
}

// fitsAlone reports whether r's missing replicas (one at least, a gang
// all) would fit in the nodes as the coordinator sees them now, without
// the capacity it left to other deployments in this step.
func (p *planner) fitsAlone(r Record, st *depState) bool {
	complete, _ := replicas(st.res)
	missing := missingOf(r, len(complete))
	if missing <= 0 {
		return false
	}
	snap := make([]scheduler.Node, 0, len(p.nodes))
	for _, n := range p.nodes {
		if !slices.Contains(r.Spec.Avoid, n.ID) {
			snap = append(snap, p.snapshot(n))
		}
	}
	pool, err := scheduler.NewPool(snap, p.c.cfg.Scheduler)
	if err != nil {
		return false
	}
	req := r.Spec.Request
	req.ID, req.Replicas = r.ID, missing
	plan, _ := pool.Place(req)
	if req.Gang {
		return len(plan.Replicas) == missing
	}
	return len(plan.Replicas) > 0
}
