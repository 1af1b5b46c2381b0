package coordinator_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
	"github.com/shoalmesh/shoal/scheduler/coordinator/coordinatortest"
)

// Owners with their contribution histories, as the credits ledger would
// hold them.
var histories = map[string]market.Account{
	"rich": {Served: 500 * market.GPUHour, Consumed: 10 * market.GPUHour},
	"poor": {Consumed: 40 * market.GPUHour},
	// "third" and "newcomer" have no history: weight 1.
}

// fairShare is what the daemon passes: market.Order over the accounts.
func fairShare(accounts map[string]market.Account) coordinator.FairShare {
	return func(ws []coordinator.Waiting, held map[string]int64) []coordinator.Waiting {
		in := make([]market.Waiting, len(ws))
		byID := make(map[string]coordinator.Waiting, len(ws))
		for i, w := range ws {
			in[i] = market.Waiting{ID: w.ID, Identity: peer.ID(w.Owner), Milli: w.Milli, Arrival: w.Arrival}
			byID[w.ID] = w
		}
		h := make(map[peer.ID]int64, len(held))
		for o, m := range held {
			h[peer.ID(o)] = m
		}
		out := make([]coordinator.Waiting, 0, len(ws))
		for _, w := range market.Order(in, func(id peer.ID) market.Account { return accounts[string(id)] }, h) {
			out = append(out, byID[w.ID])
		}
		return out
	}
}

// cpuNode is a member without GPUs: it only coordinates.
func cpuNode(id string) scheduler.Node {
	return scheduler.Node{ID: id, CPUMilli: 8000, MemoryBytes: 64 * gib, CPUCapacity: 8000, MemoryCapacity: 64 * gib}
}

// contenders picks IDs for two deployments that different members
// coordinate, and a third (the one holding the card) of yet another.
func contenders(ms []*member) (rich, poor, hog string) {
	for i := 0; ; i++ {
		rich, poor, hog = fmt.Sprintf("rich-%d", i), fmt.Sprintf("poor-%d", i), fmt.Sprintf("hog-%d", i)
		a, b, c := ownerOf(rich, ms), ownerOf(poor, ms), ownerOf(hog, ms)
		if a != b && c != a && c != b {
			return rich, poor, hog
		}
	}
}

func submitAs(m *member, id, owner string, at time.Time, req scheduler.Request) {
	m.store.Put(id, coordinator.Spec{Name: id, Request: req, Owner: owner, Updated: at})
}

// holderOf is the deployment that holds node's card ("" when free).
func holderOf(cl *coordinatortest.Cluster, node string) string {
	for _, r := range cl.Ledger(node) {
		return r.Deployment
	}
	return ""
}

// contend runs one round: a card held by a third owner, a big contributor
// and a consumer both queued for it in the given submission order, the
// card freed, then the members stepped in the given order (the consumer's
// coordinator first when poorFirst), gossiping after each step as the
// daemon does. It returns which deployment got the card.
func contend(t *testing.T, fs coordinator.FairShare, poorSubmitsFirst, poorStepsFirst bool, rng *rand.Rand) (winner, rich, poor string) {
	t.Helper()
	cl := coordinatortest.New([]scheduler.Node{cpuNode("a"), cpuNode("b"), cpuNode("c"), gpuNode("gpu", 24)}, t0)
	var ms []*member
	for _, id := range []string{"a", "b", "c", "gpu"} {
		ms = append(ms, newMemberWith(t, cl, coordinator.Config{Self: id, FairShare: fs}))
	}
	rich, poor, hog := contenders(ms)
	one := scheduler.Request{GPUs: 1}
	submitAs(ownerOf(hog, ms), hog, "third", t0, one)
	ownerOf(hog, ms).step(cl)
	gossip(ms...)
	if got := holderOf(cl, "gpu"); got != hog {
		t.Fatalf("card held by %q; want %s", got, hog)
	}
	first, second := t0.Add(time.Second), t0.Add(2*time.Second)
	if poorSubmitsFirst {
		first, second = second, first
	}
	submitAs(ownerOf(rich, ms), rich, "rich", first, one)
	submitAs(ownerOf(poor, ms), poor, "poor", second, one)
	gossip(ms...)
	for _, m := range ms {
		m.step(cl)
	}
	gossip(ms...)
	for _, id := range []string{rich, poor} {
		if r, _ := ms[0].store.Get(id); r.Status.State != coordinator.StateQueued {
			t.Fatalf("%s while the card is held: %s; want queued", id, r.Status.State)
		}
	}
	cl.Advance(100 * time.Millisecond)
	if _, err := ownerOf(hog, ms).store.Delete(hog, cl.Now()); err != nil {
		t.Fatal(err)
	}
	ownerOf(hog, ms).step(cl) // releases the card
	gossip(ms...)
	if got := holderOf(cl, "gpu"); got != "" {
		t.Fatalf("card still held by %q after %s was removed", got, hog)
	}
	// What the coordinators learned from the nodes' answers while the card
	// was held outlasts the record for a while; let it lapse.
	cl.Advance(coordinator.DefaultLearnedFor + 100*time.Millisecond)
	order := []*member{ownerOf(rich, ms), ownerOf(poor, ms)}
	if poorStepsFirst {
		order[0], order[1] = order[1], order[0]
	}
	for _, m := range ms { // the others, in a random place
		if m != order[0] && m != order[1] {
			order = append(order, m)
		}
	}
	rng.Shuffle(len(order)-2, func(i, j int) { order[i+2], order[j+2] = order[j+2], order[i+2] })
	for _, m := range order {
		m.step(cl)
		gossip(ms...)
	}
	if err := cl.Oversold(); err != nil {
		t.Fatal(err)
	}
	return holderOf(cl, "gpu"), rich, poor
}

// Two owners wait for one card; when it frees, the bigger contributor's
// deployment gets it, whichever was submitted first and whichever
// coordinator steps first. Without fair share, the coordinator that steps
// first takes it.
func TestFairShareBiggerContributorGetsFreedCard(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		poorSubmits, poorSteps := round%2 == 0, round%4 < 2
		got, rich, _ := contend(t, fairShare(histories), poorSubmits, poorSteps, rng)
		if got != rich {
			t.Fatalf("round %d (consumer submitted first %v, its coordinator stepped first %v): card went to %q; want %s",
				round, poorSubmits, poorSteps, got, rich)
		}
	}
	got, _, poor := contend(t, nil, true, true, rng)
	if got != poor {
		t.Fatalf("without fair share the card went to %q; want %s, whose coordinator stepped first", got, poor)
	}
}

// The consumer's deployment waits with a fair-share reason while it yields,
// is placed at once when the contributor's goes away (nothing competes),
// and yields at most YieldFor when the coordinator that should claim the
// card does not (here: it is cut off from the card's node).
func TestFairShareYieldIsBounded(t *testing.T) {
	cl := coordinatortest.New([]scheduler.Node{cpuNode("a"), cpuNode("b"), cpuNode("c"), gpuNode("gpu", 24)}, t0)
	var ms []*member
	for _, id := range []string{"a", "b", "c", "gpu"} {
		ms = append(ms, newMemberWith(t, cl, coordinator.Config{Self: id, FairShare: fairShare(histories)}))
	}
	rich, poor, _ := contenders(ms)
	rm, pm := ownerOf(rich, ms), ownerOf(poor, ms)
	submitAs(rm, rich, "rich", t0, scheduler.Request{GPUs: 1})
	submitAs(pm, poor, "poor", t0, scheduler.Request{GPUs: 1})
	gossip(ms...)
	// The contributor's coordinator reaches no node with a card: its
	// deployment stays queued, but the others still see it waiting.
	cl.Cut([]string{rm.id}, []string{"gpu"})
	rm.step(cl)
	gossip(ms...)
	start := cl.Now()
	for {
		pm.step(cl)
		gossip(ms...)
		r, _ := pm.store.Get(poor)
		if r.Status.State == coordinator.StatePlaced {
			if waited := cl.Now().Sub(start); waited < coordinator.DefaultYieldFor {
				t.Fatalf("%s placed after %v of yield; want at least %v", poor, waited, coordinator.DefaultYieldFor)
			}
			break
		}
		if r.Status.Reason != coordinator.ReasonFairShare {
			t.Fatalf("%s waits with reason %q; want %q", poor, r.Status.Reason, coordinator.ReasonFairShare)
		}
		if cl.Now().Sub(start) > 2*coordinator.DefaultYieldFor {
			t.Fatalf("%s still yielding after %v", poor, cl.Now().Sub(start))
		}
		cl.Advance(250 * time.Millisecond)
	}
	if got := holderOf(cl, "gpu"); got != poor {
		t.Fatalf("card held by %q; want %s", got, poor)
	}

	// Never idle: with the contributor's deployment gone, a newcomer's
	// deployment is placed in its coordinator's first step.
	cl.Heal()
	cl.Advance(time.Second)
	if _, err := pm.store.Delete(poor, cl.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := rm.store.Delete(rich, cl.Now()); err != nil {
		t.Fatal(err)
	}
	gossip(ms...)
	for _, m := range ms {
		m.step(cl)
	}
	gossip(ms...)
	nm := ownerOf("newcomer-svc", ms)
	submitAs(nm, "newcomer-svc", "newcomer", cl.Now(), scheduler.Request{GPUs: 1})
	nm.step(cl)
	if got := holderOf(cl, "gpu"); got != "newcomer-svc" {
		t.Fatalf("newcomer with nothing competing: card held by %q; want newcomer-svc", got)
	}
}

// A waiting deployment that does not fit the free capacity takes nothing
// from one that does: a newcomer gets the free small card at once though a
// big contributor waits for a large one.
func TestFairShareNoYieldToWhatDoesNotFit(t *testing.T) {
	cl := coordinatortest.New([]scheduler.Node{gpuNode("small", 24), gpuNode("large", 80)}, t0)
	ms := []*member{
		newMemberWith(t, cl, coordinator.Config{Self: "small", FairShare: fairShare(histories)}),
		newMemberWith(t, cl, coordinator.Config{Self: "large", FairShare: fairShare(histories)}),
	}
	big := scheduler.Request{GPUs: 1, MinVRAM: 40 * gib}
	submitAs(ownerOf("hog", ms), "hog", "third", t0, big)
	ownerOf("hog", ms).step(cl)
	submitAs(ownerOf("wants-large", ms), "wants-large", "rich", t0, big)
	gossip(ms...)
	for _, m := range ms {
		m.step(cl)
	}
	gossip(ms...)
	if r, _ := ms[0].store.Get("wants-large"); r.Status.State != coordinator.StateQueued {
		t.Fatalf("wants-large: %s; want queued behind hog", r.Status.State)
	}
	nm := ownerOf("lone", ms)
	submitAs(nm, "lone", "newcomer", t0, scheduler.Request{GPUs: 1})
	nm.step(cl)
	if r, _ := nm.store.Get("lone"); r.Status.State != coordinator.StatePlaced {
		t.Fatalf("lone: %s (%s); want placed at once", r.Status.State, r.Status.Reason)
	}
}
