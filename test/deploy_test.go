package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// sliceTemplate asks for a share of one card and some of its memory.
const sliceTemplate = `apiVersion: shoal/v1
kind: Template
metadata:
  name: slice
  description: a share of one GPU, for placement tests
parameters:
  - name: vram
    type: string
    default: 1GiB
    description: GPU memory the replica takes
  - name: fraction
    type: float
    default: "0.05"
    description: share of the card
spec:
  kind: job
  priority: batch
  resources:
    gpus: 1
    gpuFraction: ${fraction}
    minVRAM: ${vram}
  runtime:
    command: [sleep, "3600"]
`

// deployment is the part of `shoal ps -o json` the tests read.
type deployment struct {
	ID   string `json:"id"`
	Spec struct {
		Request struct {
			Replicas int `json:"Replicas"`
		} `json:"request"`
	} `json:"spec"`
	Status struct {
		State       string `json:"state"`
		Reason      string `json:"reason"`
		Closest     string `json:"closest"`
		Detail      string `json:"detail"`
		Coordinator string `json:"coordinator"`
		Replicas    []struct {
			ID    string `json:"id"`
			Slots []struct {
				Node string `json:"node"`
				GPUs []struct {
					UUID  string `json:"uuid"`
					Milli int    `json:"milli"`
				} `json:"gpus"`
			} `json:"slots"`
		} `json:"replicas"`
	} `json:"status"`
	Owner string `json:"owner"`
	Runs  []struct {
		ID       string `json:"id"`
		Node     string `json:"node"`
		State    string `json:"state"`
		InFlight int    `json:"in_flight"`
	} `json:"runs"`
}

// startPool starts one node per flag set, all in one pool, and waits until
// each sees every other alive.
func startPool(tb testing.TB, flags [][]string) ([]*Node, []string) {
	tb.Helper()
	first := Up(tb, NewHome(tb), flags[0]...)
	token := first.Token()
	nodes := []*Node{first}
	for _, f := range flags[1:] {
		nodes = append(nodes, Join(tb, NewHome(tb), token, f...))
	}
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.PeerID()
	}
	for i, n := range nodes {
		ok := Eventually(20*time.Second, func() bool {
			for _, id := range ids {
				if StateOf(n.Nodes(), id) != "alive" {
					return false
				}
			}
			return true
		})
		if !ok {
			tb.Fatalf("node %d does not see all %d alive", i, len(nodes))
		}
	}
	return nodes, ids
}

func (n *Node) ps() map[string]deployment {
	var ds []deployment
	n.JSON(&ds, "ps")
	out := map[string]deployment{}
	for _, d := range ds {
		out[d.ID] = d
	}
	return out
}

func (n *Node) ledger(tb testing.TB) node.LedgerView {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := node.NewClient(n.Home).Ledger(ctx)
	if err != nil {
		tb.Fatalf("ledger of %s: %v", n.Home, err)
	}
	return l
}

// Five real nodes with GPUs of 8, 24 and 80 GiB; twenty deployments
// submitted from all five at once; every card within capacity on every
// ledger, every deployment placed (or queued only where no card has room
// left for it); one that no card can ever hold fails with its reason and
// the closest node; then the coordinator of a new deployment is killed
// right after the submission and the next member by rendezvous places it.
func TestDeployTwentyFromFiveNodes(t *testing.T) {
	nodes, ids := startPool(t, [][]string{
		{"--gpu", "RTX 3050:8GiB:2560"}, {"--gpu", "RTX 4090:24GiB:16384"}, {"--gpu", "A100 80GB:80GiB:6912"},
		{"--gpu", "RTX 4090:24GiB:16384"}, {"--gpu", "RTX 3050:8GiB:2560"},
	})
	tpl := filepath.Join(t.TempDir(), "slice.yaml")
	if err := os.WriteFile(tpl, []byte(sliceTemplate), 0o600); err != nil {
		t.Fatal(err)
	}

	// One deployment alone: from the CLI call to placed (as `ps` sees it).
	probeAt := time.Now()
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "deploy", "-f", tpl, "--name", "probe"); err != nil {
		t.Fatalf("deploy probe: %v: %s", err, stderr)
	}
	if !Eventually(10*time.Second, func() bool { return nodes[0].ps()["probe"].Status.State == "placed" }) {
		t.Fatalf("probe = %+v; want placed", nodes[0].ps()["probe"])
	}
	t.Logf("one deployment placed %v after `shoal deploy` started (CLI start and ps polling included)", time.Since(probeAt).Round(time.Millisecond))
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "rm", "probe"); err != nil {
		t.Fatalf("rm probe: %v: %s", err, stderr)
	}

	// 2 x 30 GiB (only the 80 GiB card), 4 x 10 GiB (24 or 80), 14 x 1 GiB.
	vram := func(i int) string {
		switch {
		case i < 2:
			return "30GiB"
		case i < 6:
			return "10GiB"
		default:
			return "1GiB"
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[i%len(nodes)]
			_, stderr, err := Run(t, "--home", n.Home, "deploy", "-f", tpl, "--name", fmt.Sprintf("d%02d", i), "--set", "vram="+vram(i))
			if err != nil {
				errs <- fmt.Errorf("deploy d%02d on node %d: %v: %s", i, i%len(nodes), err, stderr)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	submitted := time.Since(start)
	var ds map[string]deployment
	settled := Eventually(30*time.Second, func() bool {
		ds = nodes[0].ps()
		if len(ds) != 20 {
			return false
		}
		for _, d := range ds {
			if d.Status.State != "placed" {
				return false
			}
		}
		return true
	})
	elapsed := time.Since(start)
	if settled {
		t.Logf("20 deployments submitted in %v, all placed %v after the first submission: %.1f placements/s",
			submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond), 20/elapsed.Seconds())
	}

	// Every ledger: no card over capacity; committed replicas per deployment.
	perDep := map[string]int{}
	free := map[string]node.LedgerView{}
	for i, n := range nodes {
		l := n.ledger(t)
		free[ids[i]] = l
		for _, g := range l.Free.GPUs {
			if g.Milli < 0 || g.VRAMBytes < 0 {
				t.Errorf("node %d: GPU %s over capacity: free %d milli, %d bytes", i, g.UUID, g.Milli, g.VRAMBytes)
			}
		}
		for _, r := range l.Reservations {
			if r.State == "committed" {
				perDep[r.Deployment]++
			}
		}
	}
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("d%02d", i)
		d := ds[name]
		switch d.Status.State {
		case "placed":
			if perDep[name] != 1 || len(d.Status.Replicas) != 1 {
				t.Errorf("%s placed with %d replicas in its status and %d committed on the ledgers; want 1 and 1", name, len(d.Status.Replicas), perDep[name])
			}
		case "queued":
			// Only fair when no card has room for it any more.
			want := map[string]int64{"30GiB": 30 << 30, "10GiB": 10 << 30, "1GiB": 1 << 30}[vram(i)]
			for id, l := range free {
				for _, g := range l.Free.GPUs {
					if g.Milli >= 50 && g.VRAMBytes >= want {
						t.Errorf("%s queued (%s) though node %s GPU %s has %d milli and %d bytes free", name, d.Status.Reason, id[:12], g.UUID, g.Milli, g.VRAMBytes)
					}
				}
			}
		default:
			t.Errorf("%s is %q (%s); want placed", name, d.Status.State, d.Status.Reason)
		}
	}
	if !settled {
		t.Logf("not all placed within 30 s: %+v", ds)
	}

	// A request no card can ever hold says why and which node came closest.
	if _, stderr, err := Run(t, "--home", nodes[1].Home, "deploy", "-f", tpl, "--name", "huge", "--set", "vram=100GiB"); err != nil {
		t.Fatalf("deploy huge: %v: %s", err, stderr)
	}
	var huge deployment
	if !Eventually(10*time.Second, func() bool { huge = nodes[3].ps()["huge"]; return huge.Status.State == "failed" }) {
		t.Fatalf("huge = %+v; want failed", huge)
	}
	if huge.Status.Reason != "GPU memory too small" || indexOf(ids, huge.Status.Closest) < 0 {
		t.Errorf("huge failed with reason %q, closest %q; want \"GPU memory too small\" and a member", huge.Status.Reason, huge.Status.Closest)
	}

	// Remove everything: every ledger empties.
	for i := 0; i < 20; i++ {
		if _, stderr, err := Run(t, "--home", nodes[i%5].Home, "rm", fmt.Sprintf("d%02d", i)); err != nil {
			t.Fatalf("rm d%02d: %v: %s", i, err, stderr)
		}
	}
	Run(t, "--home", nodes[0].Home, "rm", "huge")
	if !Eventually(15*time.Second, func() bool {
		for _, n := range nodes {
			if len(n.ledger(t).Reservations) != 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("ledgers not empty after rm")
	}

	// Kill the coordinator right after a submission: the next member by
	// rendezvous places the deployment. The name is chosen so that its
	// coordinator is neither the submitter (node 0) nor the 80 GiB node.
	var name string
	var victim int
	for k := 0; ; k++ {
		name = fmt.Sprintf("takeover-%d", k)
		o := indexOf(ids, coordinator.Owner(name, ids))
		if o != 0 && o != 2 {
			victim = o
			break
		}
	}
	subAt := time.Now()
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "deploy", "-f", tpl, "--name", name, "--replicas", "3", "--set", "vram=2GiB"); err != nil {
		t.Fatalf("deploy %s: %v: %s", name, err, stderr)
	}
	nodes[victim].Kill()
	killedAt := time.Now()
	var d deployment
	ok := Eventually(30*time.Second, func() bool {
		d = nodes[0].ps()[name]
		if d.Status.State != "placed" || d.Status.Coordinator == ids[victim] {
			return false
		}
		for _, r := range d.Status.Replicas {
			for _, s := range r.Slots {
				if s.Node == ids[victim] {
					return false
				}
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("after killing coordinator %d: %s = %+v; want placed by another member on live nodes", victim, name, d)
	}
	want := coordinator.Rank(name, ids)[1]
	if d.Status.Coordinator != want {
		t.Errorf("placed by %s; want the second in rank %s", d.Status.Coordinator, want)
	}
	t.Logf("coordinator killed %v after the submission; deployment placed by the next one %v after the kill",
		killedAt.Sub(subAt).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
	for i, n := range nodes {
		if i == victim {
			continue
		}
		for _, g := range n.ledger(t).Free.GPUs {
			if g.Milli < 0 || g.VRAMBytes < 0 {
				t.Errorf("node %d: GPU %s over capacity after the takeover", i, g.UUID)
			}
		}
	}
}

// gangTemplate is a gang of members, each taking 0.6 of one card: no card
// holds two of them.
const gangTemplate = `apiVersion: shoal/v1
kind: Template
metadata:
  name: gang-slice
  description: a gang with one member per card, for takeover tests
parameters:
  - name: members
    type: int
    default: "4"
    description: gang size
spec:
  kind: gang
  priority: batch
  resources:
    gpus: 1
    gpuFraction: 0.6
    minVRAM: 1GiB
  gang:
    roles:
      - name: worker
        count: ${members}
        runtime:
          command: [sleep, "3600"]
`

// The coordinator dies between reserve and commit. Five nodes with one
// equal card each; a gang of four members, one per card. Planning on equal
// nodes takes them in view order: the coordinator's own node, then the
// others by peer ID. The third of them (the second other node) is frozen
// with SIGSTOP before the submission, so the coordinator reserves on its
// own node and the first other one, then waits on the frozen node; the
// test sees those holds on the ledgers, SIGKILLs the coordinator and thaws
// the frozen node. The next member by rendezvous must place the gang on
// the four live nodes, every hold of the dead coordinator must leave the
// ledgers (released by the next coordinator or expired by lease), and no
// card may be promised twice at any point. Then, on the same pool, an
// inference job that fits nowhere evicts a member of the batch gang, which
// goes back to waiting.
func TestDeployCoordinatorKilledBetweenReserveAndCommit(t *testing.T) {
	flags := make([][]string, 5)
	for i := range flags {
		flags[i] = []string{"--gpu", "RTX 4090:24GiB:16384"}
	}
	nodes, ids := startPool(t, flags)
	tpl := filepath.Join(t.TempDir(), "gang.yaml")
	if err := os.WriteFile(tpl, []byte(gangTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	const name = "gang"
	coord := indexOf(ids, coordinator.Owner(name, ids))
	var others []int // the other nodes, in the coordinator's view order
	for i := range nodes {
		if i != coord {
			others = append(others, i)
		}
	}
	sort.Slice(others, func(a, b int) bool { return ids[others[a]] < ids[others[b]] })
	frozen, submitter := others[1], others[3]
	if err := syscall.Kill(nodes[frozen].PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(nodes[frozen].PID, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)

	oversold := func(l node.LedgerView) error {
		for _, g := range l.Free.GPUs {
			if g.Milli < 0 || g.VRAMBytes < 0 {
				return fmt.Errorf("GPU %s over capacity: free %d milli, %d bytes", g.UUID, g.Milli, g.VRAMBytes)
			}
		}
		return nil
	}
	// holdsOf counts the gang's reservations the coordinator holds (not
	// committed) on the live, unfrozen ledgers.
	holdsOf := func(skip ...int) (held, total int) {
		for i, n := range nodes {
			if i == frozen || containsInt(skip, i) {
				continue
			}
			l := n.ledger(t)
			if err := oversold(l); err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			for _, r := range l.Reservations {
				if r.Deployment == name && r.Holder == ids[coord] {
					total++
					if r.State == "held" {
						held++
					}
				}
			}
		}
		return held, total
	}

	if _, stderr, err := Run(t, "--home", nodes[submitter].Home, "deploy", "-f", tpl, "--name", name); err != nil {
		t.Fatalf("deploy %s: %v: %s", name, err, stderr)
	}
	var held int
	if !Eventually(10*time.Second, func() bool { held, _ = holdsOf(); return held >= 2 }) {
		t.Fatalf("the coordinator (node %d) holds %d reservations of %s on the live ledgers; want the two before the frozen node", coord, held, name)
	}
	nodes[coord].Kill()
	killedAt := time.Now()
	thaw()
	t.Logf("coordinator (node %d) killed holding %d reservations of the gang, waiting on node %d", coord, held, frozen)

	live := make([]string, 0, 4)
	for i := range nodes {
		if i != coord {
			live = append(live, ids[i])
		}
	}
	var d deployment
	placed := Eventually(60*time.Second, func() bool {
		for _, i := range others {
			if err := oversold(nodes[i].ledger(t)); err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
		}
		d = nodes[submitter].ps()[name]
		if d.Status.State != "placed" || d.Status.Coordinator == ids[coord] || len(d.Status.Replicas) != 4 {
			return false
		}
		for _, r := range d.Status.Replicas {
			for _, s := range r.Slots {
				if s.Node == ids[coord] {
					return false
				}
			}
		}
		return true
	})
	if !placed {
		t.Fatalf("%s = %+v; want placed on the live nodes by another coordinator", name, d)
	}
	toPlaced := time.Since(killedAt)
	if want := coordinator.Rank(name, ids)[1]; d.Status.Coordinator != want {
		t.Errorf("placed by %s; want the second in rank %s", d.Status.Coordinator, want)
	}
	if !Eventually(30*time.Second, func() bool { _, total := holdsOf(coord); return total == 0 }) {
		t.Errorf("the dead coordinator's reservations are still on the ledgers")
	}
	toClean := time.Since(killedAt)
	committed := 0
	for _, i := range others {
		l := nodes[i].ledger(t)
		if err := oversold(l); err != nil {
			t.Errorf("node %d: %v", i, err)
		}
		for _, r := range l.Reservations {
			if r.Deployment == name && r.State == "committed" {
				committed++
			}
		}
	}
	if committed != 4 {
		t.Errorf("live ledgers hold %d committed reservations of the gang; want 4", committed)
	}
	t.Logf("kill to placed by the next coordinator: %v; kill to no reservation of the dead one left: %v",
		toPlaced.Round(time.Millisecond), toClean.Round(time.Millisecond))

	// Preemption: every live card has 0.4 left, so an inference job asking
	// for 0.7 fits nowhere until it evicts a gang member (batch, lower
	// priority). The gang's coordinator then finds a member gone, gives the
	// others back and queues the gang: four cards no longer have room.
	urgent := filepath.Join(t.TempDir(), "urgent.yaml")
	if err := os.WriteFile(urgent, []byte(urgentTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	preemptAt := time.Now()
	if _, stderr, err := Run(t, "--home", nodes[submitter].Home, "deploy", "-f", urgent, "--name", "urgent"); err != nil {
		t.Fatalf("deploy urgent: %v: %s", err, stderr)
	}
	var ds map[string]deployment
	if !Eventually(30*time.Second, func() bool {
		for _, i := range others {
			if err := oversold(nodes[i].ledger(t)); err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
		}
		ds = nodes[submitter].ps()
		return ds["urgent"].Status.State == "placed" && ds[name].Status.State == "queued"
	}) {
		t.Fatalf("urgent = %+v, gang = %+v; want urgent placed by evicting batch work and the gang queued", ds["urgent"].Status, ds[name].Status)
	}
	t.Logf("inference job placed by preemption, gang queued, %v after the submission (gang: %s)",
		time.Since(preemptAt).Round(time.Millisecond), ds[name].Status.Reason)
	if !Eventually(15*time.Second, func() bool {
		for _, i := range others {
			for _, r := range nodes[i].ledger(t).Reservations {
				if r.Deployment == name {
					return false
				}
			}
		}
		return true
	}) {
		t.Errorf("the queued gang still holds reservations")
	}
}

// urgentTemplate is an inference job on 0.7 of one card: it may evict
// batch work.
const urgentTemplate = `apiVersion: shoal/v1
kind: Template
metadata:
  name: urgent
  description: an inference job that may evict batch work
spec:
  kind: job
  priority: inference
  resources:
    gpus: 1
    gpuFraction: 0.7
    minVRAM: 1GiB
  runtime:
    command: [sleep, "3600"]
`

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Heavier (SHOAL_E2E=1): five nodes with eight cards each (8, 24 and 80 GiB),
// 200 deployments submitted through the control APIs of all five at once
// (no CLI processes in the way): placements per second, and no card over
// capacity on any ledger.
func TestDeployBurstHeavy(t *testing.T) {
	if os.Getenv("SHOAL_E2E") == "" {
		t.Skip("set SHOAL_E2E=1 (make e2e) for the 200-deployment burst")
	}
	sizes := []string{"RTX 3050:8GiB:2560", "RTX 4090:24GiB:16384", "A100 80GB:80GiB:6912", "RTX 4090:24GiB:16384", "RTX 3050:8GiB:2560"}
	var flags [][]string
	for _, g := range sizes {
		var f []string
		for k := 0; k < 8; k++ {
			f = append(f, "--gpu", g)
		}
		flags = append(flags, f)
	}
	nodes, _ := startPool(t, flags)
	const total = 200
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < total; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := node.NewClient(nodes[i%len(nodes)].Home).Deploy(ctx, node.DeployRequest{
				Name: fmt.Sprintf("h%03d", i), TemplateYAML: sliceTemplate, Params: map[string]string{"vram": "1GiB", "fraction": "0.1"},
			})
			if err != nil {
				t.Errorf("deploy h%03d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	submitted := time.Since(start)
	var placed int
	ok := Eventually(60*time.Second, func() bool {
		placed = 0
		for _, d := range nodes[0].ps() {
			if d.Status.State == "placed" {
				placed++
			}
		}
		return placed == total
	})
	elapsed := time.Since(start)
	if !ok {
		t.Fatalf("%d of %d placed after %v", placed, total, elapsed)
	}
	t.Logf("%d deployments submitted in %v, all placed after %v: %.0f placements/s", total, submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond), total/elapsed.Seconds())
	committed := 0
	for i, n := range nodes {
		l := n.ledger(t)
		for _, g := range l.Free.GPUs {
			if g.Milli < 0 || g.VRAMBytes < 0 {
				t.Errorf("node %d: GPU %s over capacity", i, g.UUID)
			}
		}
		for _, r := range l.Reservations {
			if r.State == "committed" {
				committed++
			}
		}
	}
	if committed != total {
		t.Errorf("ledgers hold %d committed reservations; want %d", committed, total)
	}
}
