package coordinator_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
	"github.com/shoalmesh/shoal/scheduler/coordinator/coordinatortest"
)

const gib = 1 << 30

var t0 = time.Unix(1_800_000_000, 0)

// gpuNode is a node with one card of vram GiB.
func gpuNode(id string, vram uint64) scheduler.Node {
	return scheduler.Node{
		ID:       id,
		GPUs:     []scheduler.GPU{{UUID: "GPU-" + id, Model: "card", Arch: "ampere", VRAM: vram * gib, FreeMilli: 1000, FreeVRAM: vram * gib}},
		CPUMilli: 8000, MemoryBytes: 64 * gib, CPUCapacity: 8000, MemoryCapacity: 64 * gib,
	}
}

// member is one coordinator with its store.
type member struct {
	id    string
	c     *coordinator.Coordinator
	store *coordinator.Store
}

func newMember(t *testing.T, cl *coordinatortest.Cluster, id string) *member {
	t.Helper()
	return newMemberWith(t, cl, coordinator.Config{Self: id})
}

// newMemberWith is the member cfg.Self, coordinating with cfg.
func newMemberWith(t testing.TB, cl *coordinatortest.Cluster, cfg coordinator.Config) *member {
	t.Helper()
	c, err := coordinator.New(cfg, cl.View(cfg.Self), cl.Transport(cfg.Self))
	if err != nil {
		t.Fatal(err)
	}
	return &member{id: cfg.Self, c: c, store: coordinator.NewStore(cfg.Self)}
}

// step runs one step at the cluster's time and writes the statuses.
func (m *member) step(cl *coordinatortest.Cluster) {
	for _, u := range m.c.Step(context.Background(), cl.Now(), m.store.List()) {
		m.store.SetStatus(u.ID, u.Status)
	}
}

func (m *member) submit(id string, req scheduler.Request) {
	m.store.Put(id, coordinator.Spec{Name: id, Request: req})
}

// gossip merges every store into every other.
func gossip(ms ...*member) {
	for _, a := range ms {
		for _, b := range ms {
			for _, r := range a.store.List() {
				b.store.Merge(r)
			}
		}
	}
}

// ownerOf is the member that coordinates id among ms (by rendezvous).
func ownerOf(id string, ms []*member) *member {
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.id)
	}
	o := coordinator.Owner(id, ids)
	for _, m := range ms {
		if m.id == o {
			return m
		}
	}
	return nil
}

// committed counts the distinct committed replicas of dep over the cluster.
func committed(cl *coordinatortest.Cluster, nodes []string, dep string) int {
	reps := map[string]bool{}
	for _, n := range nodes {
		for _, r := range cl.Ledger(n) {
			if r.Deployment == dep && r.State == "committed" {
				reps[coordinator.ReplicaID(r.ID)] = true
			}
		}
	}
	return len(reps)
}

func held(cl *coordinatortest.Cluster, nodes []string) int {
	n := 0
	for _, id := range nodes {
		n += len(cl.Ledger(id))
	}
	return n
}

func TestPlaceQueueFail(t *testing.T) {
	half := scheduler.Request{GPUs: 1, MilliGPU: 500, VRAM: 4 * gib}
	tests := []struct {
		name      string
		req       scheduler.Request
		wantState coordinator.State
		wantReps  int
		reason    string
	}{
		{"fits", half, coordinator.StatePlaced, 1, ""},
		{"three replicas", scheduler.Request{GPUs: 1, MilliGPU: 500, Replicas: 3}, coordinator.StatePlaced, 3, ""},
		{"too big for any card", scheduler.Request{GPUs: 1, MinVRAM: 100 * gib}, coordinator.StateFailed, 0, string(scheduler.ReasonMinVRAM)},
		{"two cards on one node", scheduler.Request{GPUs: 2}, coordinator.StateFailed, 0, string(scheduler.ReasonGPUCount)},
		{"five whole cards, three exist", scheduler.Request{GPUs: 1, Replicas: 5}, coordinator.StateQueued, 3, string(scheduler.ReasonGPUFree)},
		{"gang of five: all or none", scheduler.Request{GPUs: 1, Replicas: 5, Gang: true}, coordinator.StateQueued, 0, string(scheduler.ReasonGPUFree)},
		{"gang of three", scheduler.Request{GPUs: 1, Replicas: 3, Gang: true}, coordinator.StatePlaced, 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := []string{"a", "b", "c"}
			cl := coordinatortest.New([]scheduler.Node{gpuNode("a", 8), gpuNode("b", 24), gpuNode("c", 80)}, t0)
			ms := []*member{newMember(t, cl, "a"), newMember(t, cl, "b"), newMember(t, cl, "c")}
			ms[0].submit("d", tt.req)
			gossip(ms...)
			for _, m := range ms {
				m.step(cl)
			}
			gossip(ms...)
			r, _ := ms[0].store.Get("d")
			if r.Status.State != tt.wantState || len(r.Status.Replicas) != tt.wantReps || r.Status.Reason != tt.reason {
				t.Fatalf("status = %+v; want %s with %d replicas, reason %q", r.Status, tt.wantState, tt.wantReps, tt.reason)
			}
			if got := committed(cl, nodes, "d"); got != tt.wantReps {
				t.Errorf("ledgers hold %d committed replicas; want %d", got, tt.wantReps)
			}
			if tt.wantState == coordinator.StateFailed && r.Status.Closest == "" {
				t.Errorf("failed status names no closest node: %+v", r.Status)
			}
			if tt.wantReps == 0 && held(cl, nodes) != 0 {
				t.Errorf("a refused placement left reservations behind: %d", held(cl, nodes))
			}
			if err := cl.Oversold(); err != nil {
				t.Error(err)
			}
		})
	}
}

// A queued deployment is placed once capacity frees up; a removed one gives
// its reservations back.
func TestQueueDrainsWhenCapacityFrees(t *testing.T) {
	cl := coordinatortest.New([]scheduler.Node{gpuNode("a", 24)}, t0)
	m := newMember(t, cl, "a")
	m.submit("first", scheduler.Request{GPUs: 1})
	m.step(cl)
	m.submit("second", scheduler.Request{GPUs: 1})
	m.step(cl)
	if r, _ := m.store.Get("second"); r.Status.State != coordinator.StateQueued {
		t.Fatalf("second = %+v; want queued", r.Status)
	}
	if _, err := m.store.Delete("first", cl.Now()); err != nil {
		t.Fatal(err)
	}
	m.step(cl)
	m.step(cl)
	if r, _ := m.store.Get("second"); r.Status.State != coordinator.StatePlaced {
		t.Fatalf("second after first was removed = %+v; want placed", r.Status)
	}
	if r, _ := m.store.Get("first"); r.Status.State != coordinator.StateDeleted {
		t.Errorf("first = %+v; want deleted", r.Status)
	}
	if committed(cl, []string{"a"}, "first") != 0 {
		t.Error("the removed deployment still holds its reservation")
	}
}

// Leases: committed reservations live as long as their coordinator renews
// them, and expire when it stops.
func TestLeasesRenewedAndExpired(t *testing.T) {
	cl := coordinatortest.New([]scheduler.Node{gpuNode("a", 24)}, t0)
	m := newMember(t, cl, "a")
	m.submit("d", scheduler.Request{GPUs: 1, MilliGPU: 250})
	for i := 0; i < 30; i++ { // 60 s with steps every 2 s
		m.step(cl)
		cl.Advance(2 * time.Second)
	}
	if got := committed(cl, []string{"a"}, "d"); got != 1 {
		t.Fatalf("after 60 s of renewals: %d committed replicas; want 1", got)
	}
	cl.Advance(coordinator.DefaultCommitLease + time.Second)
	if got := len(cl.Ledger("a")); got != 0 {
		t.Errorf("without renewals the ledger still holds %d reservations", got)
	}
}

// A coordinator that dies between reserve and commit leaves held
// reservations; the next member by rendezvous adopts the deployment, gives
// the orphans back and finishes the placement.
func TestTakeoverAfterCoordinatorDiesMidPlacement(t *testing.T) {
	ids := []string{"a", "b", "c", "d"}
	var nodes []scheduler.Node
	for _, id := range ids {
		nodes = append(nodes, gpuNode(id, 24))
	}
	cl := coordinatortest.New(nodes, t0)
	ms := make([]*member, len(ids))
	for i, id := range ids {
		ms[i] = newMember(t, cl, id)
	}
	dep := "svc"
	owner := ownerOf(dep, ms)
	// The owner's transport dies after its second reserve: one replica
	// placed and committed, the next one held, then silence.
	killer := &dyingTransport{inner: cl.Transport(owner.id), after: 3, kill: func() { cl.Kill(owner.id) }}
	c, err := coordinator.New(coordinator.Config{Self: owner.id}, cl.View(owner.id), killer)
	if err != nil {
		t.Fatal(err)
	}
	owner.c = c
	owner.submit(dep, scheduler.Request{GPUs: 1, MilliGPU: 500, Replicas: 3})
	gossip(ms...)
	owner.step(cl)
	if got := committed(cl, ids, dep); got == 3 {
		t.Fatalf("the owner placed everything before dying; the test wants it to die mid-placement")
	}
	var rest []*member
	for _, m := range ms {
		if m != owner {
			rest = append(rest, m)
		}
	}
	next := ownerOf(dep, rest)
	if want := coordinator.Rank(dep, ids)[1]; next.id != want {
		t.Fatalf("next owner %s; want second in rank %s", next.id, want)
	}
	for _, m := range rest {
		m.step(cl)
	}
	gossip(rest...)
	r, _ := next.store.Get(dep)
	if r.Status.State != coordinator.StatePlaced || r.Status.Coordinator != next.id {
		t.Fatalf("after takeover: %+v; want placed by %s", r.Status, next.id)
	}
	var alive []string
	for _, m := range rest {
		alive = append(alive, m.id)
	}
	if got := committed(cl, alive, dep); got != 3 {
		t.Errorf("live nodes hold %d committed replicas; want 3", got)
	}
	for _, id := range alive {
		for _, res := range cl.Ledger(id) {
			if res.State != "committed" {
				t.Errorf("node %s still holds %s in state %s", id, res.ID, res.State)
			}
		}
	}
}

type dyingTransport struct {
	inner coordinator.Transport
	after int
	kill  func()
	n     int
}

func (d *dyingTransport) Call(ctx context.Context, node string, c coordinator.Call) (coordinator.Answer, error) {
	if c.Op == coordinator.OpReserve || c.Op == coordinator.OpCommit {
		d.n++
		if d.n == d.after+1 {
			d.kill()
		}
	}
	return d.inner.Call(ctx, node, c)
}

// Two coordinators that each believe they own a deployment (a partition)
// place replicas on the nodes they reach; node-local admission keeps every
// card within capacity; when the partition heals, the owner drains the
// surplus by the deterministic rule and the oldest replicas stay.
func TestPartitionSurplusDrained(t *testing.T) {
	left, right := []string{"a", "b"}, []string{"c", "d"}
	all := append(append([]string(nil), left...), right...)
	var nodes []scheduler.Node
	for _, id := range all {
		nodes = append(nodes, gpuNode(id, 24))
	}
	cl := coordinatortest.New(nodes, t0)
	ms := map[string]*member{}
	for _, id := range all {
		ms[id] = newMember(t, cl, id)
	}
	dep := "web"
	ms["a"].submit(dep, scheduler.Request{GPUs: 1, MilliGPU: 300, Replicas: 2})
	gossip(ms["a"], ms["b"], ms["c"], ms["d"])
	cl.Cut(left, right)
	for _, id := range all {
		ms[id].step(cl)
		cl.Advance(time.Millisecond)
	}
	if got := committed(cl, all, dep); got != 4 {
		t.Fatalf("during the partition: %d replicas; want 2 on each side", got)
	}
	var before []string
	for _, id := range all {
		for _, r := range cl.Ledger(id) {
			before = append(before, coordinator.ReplicaID(r.ID))
		}
	}
	sort.Strings(before)
	cl.Heal()
	cl.Advance(coordinator.DefaultResyncEvery)
	for _, id := range all {
		ms[id].step(cl)
	}
	if got := committed(cl, all, dep); got != 2 {
		t.Fatalf("after healing: %d replicas; want 2", got)
	}
	var after []string
	for _, id := range all {
		for _, r := range cl.Ledger(id) {
			after = append(after, coordinator.ReplicaID(r.ID))
		}
	}
	sort.Strings(after)
	if fmt.Sprint(after) != fmt.Sprint(before[:2]) {
		t.Errorf("kept %v; want the lowest IDs %v", after, before[:2])
	}
	if err := cl.Oversold(); err != nil {
		t.Error(err)
	}
}

// Two coordinators with stale views race for the last card: the node's
// ledger admits one, refuses the other, and the loser queues with the
// node's reason.
func TestRaceForLastGPU(t *testing.T) {
	cl := coordinatortest.New([]scheduler.Node{gpuNode("gpu", 24), {ID: "x", CPUMilli: 1000, CPUCapacity: 1000}, {ID: "y", CPUMilli: 1000, CPUCapacity: 1000}}, t0)
	cl.SetStale(true)
	ids := []string{"gpu", "x", "y"}
	x, y := newMember(t, cl, "x"), newMember(t, cl, "y")
	// Find a deployment each of x and y owns.
	var dx, dy string
	for i := 0; dx == "" || dy == ""; i++ {
		id := fmt.Sprintf("d%d", i)
		switch coordinator.Owner(id, ids) {
		case "x":
			if dx == "" {
				dx = id
			}
		case "y":
			if dy == "" {
				dy = id
			}
		}
	}
	x.submit(dx, scheduler.Request{GPUs: 1})
	y.submit(dy, scheduler.Request{GPUs: 1})
	x.step(cl)
	y.step(cl)
	rx, _ := x.store.Get(dx)
	ry, _ := y.store.Get(dy)
	states := []coordinator.State{rx.Status.State, ry.Status.State}
	sort.Slice(states, func(i, j int) bool { return states[i] < states[j] })
	if states[0] != coordinator.StatePlaced || states[1] != coordinator.StateQueued {
		t.Fatalf("states %v, %v; want one placed and one queued", rx.Status, ry.Status)
	}
	loser := ry.Status
	if rx.Status.State == coordinator.StateQueued {
		loser = rx.Status
	}
	if !strings.Contains(loser.Detail, "gpu") && !strings.Contains(loser.Reason, "GPU") {
		t.Errorf("the loser's status %+v does not say the GPU ran short", loser)
	}
	if err := cl.Oversold(); err != nil {
		t.Error(err)
	}
}

// Property: coordinators in a partitioned pool, planning from stale views,
// each believing it owns the same deployments, never oversell a card; once
// the views merge, no deployment keeps more replicas than it asked for.
func TestConcurrentCoordinatorsNeverOversell(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		var nodes []scheduler.Node
		var all []string
		sizes := []uint64{8, 24, 80}
		for i := 0; i < 6; i++ {
			id := fmt.Sprintf("n%d", i)
			nodes = append(nodes, gpuNode(id, sizes[rng.IntN(3)]))
			all = append(all, id)
		}
		coords := all[:3]
		others := all[3:]
		cl := coordinatortest.New(nodes, t0)
		cl.SetStale(true)
		// Coordinators do not see one another; all of them see the others.
		for i := range coords {
			for j := range coords {
				if i != j {
					cl.Cut([]string{coords[i]}, []string{coords[j]})
				}
			}
		}
		ms := make([]*member, len(coords))
		for i, id := range coords {
			ms[i] = newMember(t, cl, id)
		}
		// Deployments that every coordinator owns in its own view.
		var deps []string
		for k := 0; len(deps) < 8; k++ {
			id := fmt.Sprintf("s%d-d%d", seed, k)
			ok := true
			for _, c := range coords {
				if coordinator.Owner(id, append([]string{c}, others...)) != c {
					ok = false
				}
			}
			if ok {
				deps = append(deps, id)
			}
		}
		want := map[string]int{}
		for _, d := range deps {
			req := scheduler.Request{GPUs: 1, MilliGPU: []int{250, 500, 1000}[rng.IntN(3)], Replicas: 1 + rng.IntN(3)}
			want[d] = req.Replicas
			ms[0].submit(d, req)
		}
		gossip(ms...)
		for round := 0; round < 12; round++ {
			for _, i := range rng.Perm(len(ms)) {
				ms[i].step(cl)
				if err := cl.Oversold(); err != nil {
					t.Fatalf("seed %d round %d: %v", seed, round, err)
				}
			}
			if rng.IntN(3) == 0 {
				cl.Announce()
			}
			cl.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		}
		cl.Heal()
		cl.Announce()
		cl.Advance(coordinator.DefaultResyncEvery)
		for round := 0; round < 3; round++ {
			for _, m := range ms {
				m.step(cl)
			}
		}
		for _, d := range deps {
			if got := committed(cl, all, d); got > want[d] {
				t.Errorf("seed %d: %s holds %d replicas after the views merged; want at most %d", seed, d, got, want[d])
			}
		}
		if err := cl.Oversold(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// An inference deployment that fits nowhere evicts the least costly batch
// work of lower priority (the younger of two training jobs); the victim's
// own coordinator finds its replica gone and queues it, and places it again
// once the inference deployment is removed.
func TestPreemptionEvictsCheapestBatch(t *testing.T) {
	ids := []string{"a", "b"}
	cl := coordinatortest.New([]scheduler.Node{gpuNode("a", 24), gpuNode("b", 24)}, t0)
	ms := []*member{newMember(t, cl, "a"), newMember(t, cl, "b")}
	stepAll := func() {
		t.Helper()
		for _, m := range ms {
			m.step(cl)
			if err := cl.Oversold(); err != nil {
				t.Fatal(err)
			}
		}
		gossip(ms...)
	}
	status := func(dep string) coordinator.Status {
		r, _ := ms[0].store.Get(dep)
		return r.Status
	}
	batch := scheduler.Request{GPUs: 1, Class: scheduler.Batch}
	ms[0].submit("train-old", batch)
	gossip(ms...)
	stepAll()
	wait := func(d time.Duration) { // renewals keep the replicas alive
		for end := cl.Now().Add(d); cl.Now().Before(end); {
			cl.Advance(5 * time.Second)
			stepAll()
		}
	}
	wait(10 * time.Minute)
	ms[1].submit("train-new", batch)
	gossip(ms...)
	stepAll()
	wait(time.Minute)
	for _, d := range []string{"train-old", "train-new"} {
		if s := status(d); s.State != coordinator.StatePlaced {
			t.Fatalf("%s = %+v; want placed", d, s)
		}
	}
	ms[0].submit("serve", scheduler.Request{GPUs: 1, Class: scheduler.Inference, Priority: 10})
	gossip(ms...)
	stepAll()
	if s := status("serve"); s.State != coordinator.StatePlaced {
		t.Fatalf("serve = %+v; want placed by evicting batch work", s)
	}
	if got := committed(cl, ids, "train-new"); got != 0 {
		t.Errorf("train-new still holds %d replicas; want it evicted (the younger, cheaper job)", got)
	}
	if got := committed(cl, ids, "train-old"); got != 1 {
		t.Errorf("train-old holds %d replicas; want 1 (the older job is spared)", got)
	}
	// train-new's coordinator learns at its next renewal that the node
	// no longer holds its replica, and queues it.
	wait(coordinator.DefaultCommitLease / 3)
	if s := status("train-new"); s.State != coordinator.StateQueued {
		t.Fatalf("train-new after eviction = %+v; want queued", s)
	}
	if s := status("serve"); s.State != coordinator.StatePlaced {
		t.Fatalf("serve = %+v; want still placed (batch never evicts inference)", s)
	}
	if _, err := ms[0].store.Delete("serve", cl.Now()); err != nil {
		t.Fatal(err)
	}
	gossip(ms...)
	for i := 0; i < 5 && status("train-new").State != coordinator.StatePlaced; i++ {
		cl.Advance(time.Second) // what the nodes last answered ages out
		stepAll()
	}
	if s := status("train-new"); s.State != coordinator.StatePlaced {
		t.Fatalf("train-new after serve was removed = %+v; want placed again", s)
	}
	if got := committed(cl, ids, "train-old") + committed(cl, ids, "train-new"); got != 2 {
		t.Errorf("%d batch replicas committed; want 2", got)
	}
}

// Batch work never evicts: a batch deployment that fits nowhere waits.
func TestBatchDoesNotPreempt(t *testing.T) {
	cl := coordinatortest.New([]scheduler.Node{gpuNode("a", 24)}, t0)
	m := newMember(t, cl, "a")
	m.submit("low", scheduler.Request{GPUs: 1, Class: scheduler.Batch})
	m.step(cl)
	m.submit("high", scheduler.Request{GPUs: 1, Class: scheduler.Batch, Priority: 5})
	m.step(cl)
	if r, _ := m.store.Get("high"); r.Status.State != coordinator.StateQueued {
		t.Fatalf("high = %+v; want queued", r.Status)
	}
	if got := committed(cl, []string{"a"}, "low"); got != 1 {
		t.Errorf("low holds %d replicas; want 1", got)
	}
}

// listCalls runs a pool of n members, each the coordinator of about one
// single-replica deployment, for a simulated minute with a step every
// second, and returns the list calls the nodes served after the first
// placement.
func listCalls(t testing.TB, n int, cfg coordinator.Config) int {
	var nodes []scheduler.Node
	for i := 0; i < n; i++ {
		nodes = append(nodes, gpuNode(fmt.Sprintf("n%02d", i), 24))
	}
	cl := coordinatortest.New(nodes, t0)
	ms := make([]*member, n)
	for i, nd := range nodes {
		cfg.Self = nd.ID
		ms[i] = newMemberWith(t, cl, cfg)
	}
	for i := 0; i < n; i++ {
		ms[0].submit(fmt.Sprintf("d%02d", i), scheduler.Request{GPUs: 1, MilliGPU: 500})
	}
	gossip(ms...)
	for _, m := range ms {
		m.step(cl)
	}
	gossip(ms...)
	start := cl.CallsOf(coordinator.OpList)
	for s := 0; s < 60; s++ {
		cl.Advance(time.Second)
		for _, m := range ms {
			m.step(cl)
		}
	}
	all := make([]string, n)
	for i, nd := range nodes {
		all[i] = nd.ID
	}
	for i := 0; i < n; i++ {
		if got := committed(cl, all, fmt.Sprintf("d%02d", i)); got != 1 {
			t.Fatalf("d%02d holds %d replicas after a minute; want 1", i, got)
		}
	}
	return cl.CallsOf(coordinator.OpList) - start
}

// Resyncs cost calls in proportion to the replicas, not to the square of
// the members: a coordinator lists only the nodes that hold its
// deployments' reservations, and every node only once a minute or when
// the membership changes. Listing every node at every resync (the old
// behaviour, FullResyncEvery = ResyncEvery) costs n² calls per 5 s.
func TestResyncProportionate(t *testing.T) {
	const n = 20
	targeted := listCalls(t, n, coordinator.Config{})
	full := listCalls(t, n, coordinator.Config{FullResyncEvery: coordinator.DefaultResyncEvery})
	t.Logf("%d members, one minute: %d list calls targeted, %d listing every node", n, targeted, full)
	// Per minute: 12 targeted resyncs of about one node per owner, and at
	// most one full listing per owner.
	if limit := 12*n + n*n; targeted > limit {
		t.Errorf("%d list calls in a minute; want at most %d", targeted, limit)
	}
	if targeted*4 > full {
		t.Errorf("targeted resync made %d list calls, listing every node %d; want at least 4x fewer", targeted, full)
	}
}
