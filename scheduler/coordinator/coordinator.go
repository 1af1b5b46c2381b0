package coordinator

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
)

// Coordinator reconciles the deployments this member owns. It keeps what it
// knows of their reservations between steps. Step is synchronous and the
// Coordinator is not safe for concurrent use: one goroutine of the caller
// drives it.
type Coordinator struct {
	cfg  Config
	view View
	tr   Transport
	deps map[string]*depState
	seq  uint64
	// mu guards learned, which resync's calls fill from several goroutines.
	mu      sync.Mutex
	learned map[string]learnedFree
	// lastResync is when the nodes holding known reservations were last
	// listed, lastFull when every node was; members is the view they were
	// listed in (sorted IDs, joined).
	lastResync, lastFull time.Time
	members              string
	// held is every node's reservations as last listed for preemption, at
	// heldAt (see holdings).
	held   map[string][]Reservation
	heldAt time.Time
	// now is the time of the step under way.
	now time.Time
}

// depState is what the coordinator knows of one deployment it owns.
type depState struct {
	// res are the reservations of the deployment it knows to be held on
	// nodes, by reservation ID; after each step only committed ones.
	res       map[string]Reservation
	lastRenew time.Time
	// yieldSince is when it began to leave capacity it fits in to
	// deployments with a larger fair share (zero: it does not).
	yieldSince time.Time
}

type learnedFree struct {
	free Free
	at   time.Time
}

// New returns a coordinator for member cfg.Self.
func New(cfg Config, view View, tr Transport) (*Coordinator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Coordinator{cfg: cfg, view: view, tr: tr, deps: map[string]*depState{}, learned: map[string]learnedFree{}}, nil
}

// Update is the status a step computed for a deployment this member owns.
type Update struct {
	ID     string
	Status Status
}

// Step reconciles every record this member owns in the current view (see
// Owner): it adopts deployments newly owned (listing the nodes'
// reservations), drains surplus replicas, renews leases, places what is
// missing and returns the status of each owned deployment. Deployments it
// no longer owns are forgotten (their next owner renews them). now is the
// time of the step; ctx bounds the calls it makes.
func (c *Coordinator) Step(ctx context.Context, now time.Time, recs []Record) []Update {
	c.now = now
	nodes := c.view.Nodes()
	alive := make(map[string]scheduler.Node, len(nodes))
	ids := make([]string, 0, len(nodes))
	for _, n := range nodes {
		alive[n.ID] = n
		ids = append(ids, n.ID)
	}
	c.mu.Lock()
	for id, l := range c.learned {
		if now.Sub(l.at) > c.cfg.LearnedFor {
			delete(c.learned, id)
		}
	}
	c.mu.Unlock()
	var owned []Record
	ownedSet := map[string]bool{}
	for _, r := range recs {
		if Owner(r.ID, ids) != c.cfg.Self {
			continue
		}
		if r.Spec.Deleted && r.Status.State == StateDeleted && c.deps[r.ID] == nil {
			continue // released and reported
		}
		owned = append(owned, r)
		ownedSet[r.ID] = true
	}
	for id := range c.deps {
		if !ownedSet[id] {
			delete(c.deps, id)
		}
	}
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	members := strings.Join(sorted, ",")
	full := now.Sub(c.lastFull) >= c.cfg.FullResyncEvery || members != c.members
	for _, r := range owned {
		if c.deps[r.ID] == nil {
			c.deps[r.ID] = &depState{res: map[string]Reservation{}}
			full = true // newly owned: adopt what the nodes hold for it
		}
	}
	if len(owned) == 0 {
		return nil
	}
	switch {
	case full:
		c.resync(ctx, ids, ids, ownedSet)
		c.lastResync, c.lastFull, c.members = now, now, members
	case now.Sub(c.lastResync) >= c.cfg.ResyncEvery:
		c.resync(ctx, c.holders(), ids, ownedSet)
		c.lastResync = now
	}
	// Higher priority first, then fair share (fairshare.go), then by ID:
	// the order is the same on every member, so a replay gives the same
	// plans.
	pl := &planner{c: c, nodes: nodes, now: now}
	out := make([]Update, 0, len(owned))
	for _, it := range c.order(now, owned, recs) {
		r := it.rec
		if !it.owned {
			pl.yieldTo(r, it.missing)
			continue
		}
		s := c.reconcile(ctx, now, r, alive, pl)
		if c.cfg.FairShare != nil {
			s = c.yielding(now, r, s, pl)
		}
		out = append(out, Update{ID: r.ID, Status: s})
		if r.Spec.Deleted && len(c.deps[r.ID].res) == 0 {
			delete(c.deps, r.ID) // released; nothing left to watch
		}
	}
	return out
}

// holders are the nodes that hold reservations this coordinator knows of,
// sorted.
func (c *Coordinator) holders() []string {
	set := map[string]bool{}
	for _, st := range c.deps {
		for _, r := range st.res {
			set[r.Slot.Node] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// resync lists the reservations of the nodes ids and folds those of owned
// deployments into what the coordinator knows: committed ones are adopted,
// held ones of a holder that is not among the alive members (or of this
// member, left by an interrupted step) are released, and known ones a node
// no longer holds are forgotten.
func (c *Coordinator) resync(ctx context.Context, ids, alive []string, owned map[string]bool) {
	answers := c.list(ctx, ids)
	aliveSet := map[string]bool{}
	for _, id := range alive {
		aliveSet[id] = true
	}
	for _, l := range answers {
		if l.err != nil {
			continue
		}
		held := map[string]bool{}
		var stale []string
		for _, r := range l.res {
			if !owned[r.Deployment] {
				continue
			}
			r.Slot.Node = l.node
			st := c.deps[r.Deployment]
			held[r.ID] = true
			switch {
			case r.State == Committed:
				st.res[r.ID] = r
			case r.Holder == c.cfg.Self || !aliveSet[r.Holder]:
				stale = append(stale, r.ID)
			}
		}
		for _, st := range c.deps {
			for id, r := range st.res {
				if r.Slot.Node == l.node && !held[id] {
					delete(st.res, id)
				}
			}
		}
		if len(stale) > 0 {
			_, _ = c.call(ctx, l.node, Call{Op: OpRelease, IDs: stale})
		}
	}
}

// holdings is every alive node's reservations, listed at most once per
// ResyncEvery: preemption needs to know what it could evict, and only an
// inference deployment that fits nowhere asks.
func (c *Coordinator) holdings(ctx context.Context, nodes []scheduler.Node) map[string][]Reservation {
	if c.held != nil && c.now.Sub(c.heldAt) < c.cfg.ResyncEvery {
		return c.held
	}
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	c.held = make(map[string][]Reservation, len(nodes))
	for _, l := range c.list(ctx, ids) {
		var res []Reservation
		if l.err == nil {
			res = l.res
		}
		c.held[l.node] = res
	}
	c.heldAt = c.now
	return c.held
}

// listed is one node's answer to OpList.
type listed struct {
	node string
	res  []Reservation
	err  error
}

// list asks the nodes ids for their reservations, all at once, and
// returns their answers in the order of ids.
func (c *Coordinator) list(ctx context.Context, ids []string) []listed {
	answers := make([]listed, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := c.call(ctx, id, Call{Op: OpList})
			answers[i] = listed{node: id, res: a.Reservations, err: err}
		}()
	}
	wg.Wait()
	return answers
}

// evicted forgets reservations that node evicted: in the holdings and in
// the deployments this coordinator owns (which then place the lost
// replicas again, or queue them).
func (c *Coordinator) evicted(node string, ids []string) {
	if len(ids) == 0 {
		return
	}
	gone := map[string]bool{}
	for _, id := range ids {
		gone[id] = true
	}
	if h, ok := c.held[node]; ok {
		keep := h[:0:0]
		for _, r := range h {
			if !gone[r.ID] {
				keep = append(keep, r)
			}
		}
		c.held[node] = keep
	}
	for _, st := range c.deps {
		for id, r := range st.res {
			if gone[id] && r.Slot.Node == node {
				delete(st.res, id)
			}
		}
	}
}

// learn notes the free capacity node reported at now.
func (c *Coordinator) learn(node string, f Free, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.learned[node] = learnedFree{free: f, at: now}
}

// learnedOf is what node last reported, if recent.
func (c *Coordinator) learnedOf(node string) (Free, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.learned[node]
	return l.free, ok
}

func (c *Coordinator) call(ctx context.Context, node string, call Call) (Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	a, err := c.tr.Call(ctx, node, call)
	if err != nil {
		return Answer{}, err
	}
	if a.Free != nil {
		c.learn(node, *a.Free, c.now)
	}
	if a.Error != "" {
		return a, fmt.Errorf("coordinator: node %s: %s", node, a.Error)
	}
	return a, nil
}

// reconcile brings one owned deployment towards its spec and returns its
// status.
func (c *Coordinator) reconcile(ctx context.Context, now time.Time, r Record, alive map[string]scheduler.Node, pl *planner) Status {
	st := c.deps[r.ID]
	for id, res := range st.res {
		if _, ok := alive[res.Slot.Node]; !ok {
			delete(st.res, id) // its node is gone; the replica with it
		}
	}
	complete, broken := replicas(st.res)
	c.releaseReplicas(ctx, st, broken)
	desired := r.Spec.Desired()
	if r.Spec.Request.Gang && len(complete) > 0 && len(complete) < desired {
		// A gang runs whole or not at all: give back the survivors and place
		// it again.
		c.releaseReplicas(ctx, st, complete)
		complete = nil
	}
	if surplus := Surplus(complete, desired); len(surplus) > 0 {
		c.releaseReplicas(ctx, st, surplus)
		complete = complete[:desired]
	}
	if r.Spec.Deleted {
		return Status{State: StateDeleted, Coordinator: c.cfg.Self}
	}
	if now.Sub(st.lastRenew) >= c.cfg.RenewEvery && len(st.res) > 0 {
		c.renew(ctx, st)
		st.lastRenew = now
		complete, broken = replicas(st.res)
		c.releaseReplicas(ctx, st, broken)
	}
	status := Status{Coordinator: c.cfg.Self, State: StatePlaced}
	if missing := missingOf(r, len(complete)); missing > 0 {
		status = pl.place(ctx, r, st, missing)
		status.Coordinator = c.cfg.Self
	}
	complete, _ = replicas(st.res)
	for _, id := range complete {
		rs := ReplicaStatus{ID: id, State: ReplicaPlaced}
		for _, res := range slotsOf(st.res, id) {
			rs.Slots = append(rs.Slots, res.Slot)
		}
		status.Replicas = append(status.Replicas, rs)
	}
	return status
}

// renew extends the lease of every known reservation; those a node no
// longer holds are forgotten.
func (c *Coordinator) renew(ctx context.Context, st *depState) {
	for node, ids := range byNode(st.res, nil) {
		a, err := c.call(ctx, node, Call{Op: OpRenew, IDs: ids, LeaseMillis: c.cfg.CommitLease.Milliseconds()})
		if err != nil {
			continue // unreachable now; try again at the next renewal
		}
		for _, id := range a.Unknown {
			delete(st.res, id)
		}
	}
}

// releaseReplicas releases every slot of the given replicas.
func (c *Coordinator) releaseReplicas(ctx context.Context, st *depState, reps []string) {
	if len(reps) == 0 {
		return
	}
	want := map[string]bool{}
	for _, id := range reps {
		want[id] = true
	}
	for node, ids := range byNode(st.res, want) {
		_, _ = c.call(ctx, node, Call{Op: OpRelease, IDs: ids})
	}
	for id, res := range st.res {
		if want[ReplicaID(res.ID)] {
			delete(st.res, id)
		}
	}
}

// byNode groups reservation IDs by node, keeping those of replicas in want
// (all when want is nil), each list sorted.
func byNode(res map[string]Reservation, want map[string]bool) map[string][]string {
	out := map[string][]string{}
	for id, r := range res {
		if want == nil || want[ReplicaID(id)] {
			out[r.Slot.Node] = append(out[r.Slot.Node], id)
		}
	}
	for _, ids := range out {
		sort.Strings(ids)
	}
	return out
}

// ReplicaID is the replica a reservation ID belongs to: the ID without its
// "#slot/slots" suffix.
func ReplicaID(reservationID string) string {
	id, _, _ := strings.Cut(reservationID, "#")
	return id
}

// slotCount parses the slot count from "<replica>#<i>/<n>"; 0 when absent.
func slotCount(reservationID string) int {
	_, suffix, ok := strings.Cut(reservationID, "#")
	if !ok {
		return 0
	}
	_, n, ok := strings.Cut(suffix, "/")
	if !ok {
		return 0
	}
	v, err := strconv.Atoi(n)
	if err != nil || v <= 0 || v > 64 {
		return 0
	}
	return v
}

// replicas sorts known reservations into complete replicas (every slot
// known and committed) and broken ones (a slot missing: its node died or
// its lease ran out), both as sorted replica IDs.
func replicas(res map[string]Reservation) (complete, broken []string) {
	slots := map[string]int{}
	want := map[string]int{}
	committed := map[string]bool{}
	for id, r := range res {
		rid := ReplicaID(id)
		if _, ok := committed[rid]; !ok {
			committed[rid] = true
		}
		slots[rid]++
		want[rid] = slotCount(id)
		if r.State != Committed {
			committed[rid] = false
		}
	}
	for rid, n := range slots {
		if n == want[rid] && committed[rid] {
			complete = append(complete, rid)
		} else {
			broken = append(broken, rid)
		}
	}
	sort.Strings(complete)
	sort.Strings(broken)
	return complete, broken
}

func slotsOf(res map[string]Reservation, replica string) []Reservation {
	var out []Reservation
	for id, r := range res {
		if ReplicaID(id) == replica {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Surplus is the deterministic drain rule: of a deployment's complete
// replicas (IDs), keep the desired number whose IDs sort lowest and return
// the rest to release. Replica IDs begin with their creation time in
// nanoseconds (fixed-width hex), so the oldest replicas stay; two
// coordinators that placed replicas in a partition agree on which go,
// whatever order they see them in.
func Surplus(replicaIDs []string, desired int) []string {
	if len(replicaIDs) <= desired {
		return nil
	}
	ids := append([]string(nil), replicaIDs...)
	sort.Strings(ids)
	return ids[max(0, desired):]
}

// newReplicaID names a replica of deployment dep placed at now:
// "<dep>/<ns since epoch, 16 hex digits>-<seq>-<holder>".
func (c *Coordinator) newReplicaID(dep string, now time.Time) string {
	c.seq++
	holder := c.cfg.Self
	if len(holder) > 12 {
		holder = holder[len(holder)-12:]
	}
	return fmt.Sprintf("%s/%016x-%04x-%s", dep, uint64(now.UnixNano()), c.seq%0x10000, holder)
}
