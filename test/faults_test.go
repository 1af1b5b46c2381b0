package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/runtime/runtimetest"
)

// faultGPU is the card every GPU node of the fault scenarios declares.
var faultGPU = []string{"--gpu", "RTX 4090:24GiB:16384", "--runtime", "process"}

// bedTemplate is the reference workload on one whole (declared) GPU, one
// replica always (no scale to zero), as a process in the node's container.
var bedTemplate = refTemplate("", 1, "10m")

// faultKit is what every scenario shares: the node image and the static
// reference workload it holds (to generate models on the host).
type faultKit struct {
	docker, image, ref string
}

// The fault scenarios of the container test bed. Each runs its own pool of
// containers; the image is built once. The member-killed scenario runs
// wherever a Docker engine answers; the others only with SHOAL_E2E=1
// (make e2e). Each logs one line `scenario=NAME detect=… recover=…
// failed=… sent=…`.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the node image and runs pools of containers")
	}
	docker := dockerEngine(t)
	ReapStaleBeds(t, docker)
	dir := t.TempDir()
	tag := fmt.Sprintf("shoal-bed:%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	t0 := time.Now()
	buildLocalImageIn(t, docker, tag, "v0.0.0-bed", dir)
	t.Logf("scenario=image build=%v", time.Since(t0).Round(time.Millisecond))
	kit := faultKit{docker: docker, image: tag, ref: filepath.Join(dir, "rootfs", "usr", "local", "bin", "shoal-reference")}
	e2e := func(t *testing.T) {
		if os.Getenv("SHOAL_E2E") == "" {
			t.Skip("set SHOAL_E2E=1 (make e2e) for the slower fault scenarios")
		}
	}
	scenario := func(name string, slow bool, f func(*testing.T, faultKit)) {
		t.Run(name, func(t *testing.T) {
			if slow {
				e2e(t)
			}
			start := time.Now()
			f(t, kit)
			t.Logf("scenario=%s duration=%v", name, time.Since(start).Round(time.Millisecond))
		})
	}
	scenario("kill", false, faultKill)
	scenario("reboot", true, faultReboot)
	scenario("leave", true, faultLeave)
	scenario("partition", true, faultPartition)
	scenario("seeder", true, faultSeeder)
}

// importModel generates a reference model of size bytes named name on
// the host and adds it to n's cache (`shoal weights add` in the
// container, from a directory in n's home).
func (k faultKit) importModel(t *testing.T, n *BedNode, name string, size int64) {
	t.Helper()
	gen := filepath.Join(t.TempDir(), name)
	if err := runtimetest.GenerateModel(k.ref, gen, name, size); err != nil {
		t.Fatal(err)
	}
	imp := filepath.Join(n.Home, "import", name)
	if err := os.MkdirAll(imp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "vocab.txt", "weights.bin"} {
		if err := os.Rename(filepath.Join(gen, f), filepath.Join(imp, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := n.Exec("weights", "add", "/var/lib/shoal/import/"+name, "--name", name); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(imp); err != nil {
		t.Fatal(err)
	}
}

// deploy deploys bedTemplate with model as name from n.
func (k faultKit) deploy(t *testing.T, n *BedNode, name, model string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(n.Home, "bed.yaml"), []byte(bedTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Exec("deploy", "-f", "/var/lib/shoal/bed.yaml", "--set", "model="+model, "--name", name); err != nil {
		t.Fatal(err)
	}
}

// readyRuns is the replicas of dep n lists as ready; nil when n does not
// answer.
func readyRuns(n *BedNode, dep string) []psRun {
	var ds []struct {
		ID   string  `json:"id"`
		Runs []psRun `json:"runs"`
	}
	if n.TryJSON(&ds, "ps") != nil {
		return nil
	}
	var out []psRun
	for _, d := range ds {
		if d.ID == dep {
			for _, r := range d.Runs {
				if r.State == "ready" {
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// waitReadyOn waits until n lists exactly one ready replica of dep, on a
// node that ok accepts, and returns it.
func waitReadyOn(t *testing.T, n *BedNode, dep string, within time.Duration, ok func(psRun) bool) psRun {
	t.Helper()
	var got []psRun
	if !Eventually(within, func() bool {
		got = readyRuns(n, dep)
		return len(got) == 1 && ok(got[0])
	}) {
		t.Fatalf("%s lists ready replicas of %s %+v; want one on another node", n.Name, dep, got)
	}
	return got[0]
}

// byPeer is the node of nodes whose peer ID is peer.
func byPeer(t *testing.T, nodes []*BedNode, peer string) *BedNode {
	t.Helper()
	for _, n := range nodes {
		if n.PeerID == peer {
			return n
		}
	}
	t.Fatalf("no bed node has peer ID %s", peer)
	return nil
}

// ledgerCheck reads the ledger of every node in nodes: no card may be
// promised beyond its compute or VRAM. It returns the committed
// reservations of dep over all of them, and an error for a node whose
// ledger cannot be read or is oversold.
func ledgerCheck(nodes []*BedNode, dep string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	committed := 0
	for _, n := range nodes {
		l, err := n.Ledger(ctx)
		if err != nil {
			return 0, fmt.Errorf("ledger of %s: %w", n.Name, err)
		}
		milli, vram := map[string]int64{}, map[string]int64{}
		for _, r := range l.Reservations {
			for _, g := range r.Claim.GPUs {
				milli[g.UUID] += g.Milli
				vram[g.UUID] += g.VRAMBytes
			}
			if r.Deployment == dep && r.State == "committed" {
				committed++
			}
		}
		for _, g := range l.Capacity.GPUs {
			if milli[g.UUID] > 1000 || vram[g.UUID] > g.VRAMBytes {
				return 0, fmt.Errorf("%s: card %s promised %d milli, %d of %d VRAM bytes: oversold", n.Name, g.UUID, milli[g.UUID], vram[g.UUID], g.VRAMBytes)
			}
		}
		for _, g := range l.Free.GPUs {
			if g.Milli < 0 || g.VRAMBytes < 0 {
				return 0, fmt.Errorf("%s: card %s free %+v: oversold", n.Name, g.UUID, g)
			}
		}
	}
	return committed, nil
}

// oneCommitted waits until the ledgers of nodes hold exactly one committed
// reservation of dep between them, and fails on an oversold card.
func oneCommitted(t *testing.T, nodes []*BedNode, dep string, within time.Duration) {
	t.Helper()
	var n int
	var err error
	if !Eventually(within, func() bool {
		n, err = ledgerCheck(nodes, dep)
		return err == nil && n == 1
	}) {
		t.Fatalf("ledgers hold %d committed reservations of %s (%v); want exactly 1, no card oversold", n, dep, err)
	}
}

// loadResult is one request of a steady load.
type loadResult struct {
	sent, done time.Time
	status     int // 0: no answer
	err        error
}

// load sends chat requests to a gateway at a steady rate, each in its own
// goroutine with a 60 s limit, until stop.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    []loadResult
}

// loadEvery is the steady rate of the fault scenarios' requests: 5 a
// second, so that an outage of up to 20 s fits the gateway's queue of 100
// waiting requests per deployment.
const loadEvery = 200 * time.Millisecond

const bedChat = `{"model":"ref","messages":[{"role":"user","content":"where do the fish swim?"}],"max_tokens":8}`

func startLoad(base string, every time.Duration) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	client := &http.Client{Timeout: 60 * time.Second}
	one := func() {
		defer l.wg.Done()
		r := loadResult{sent: time.Now()}
		req, _ := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, base+"/v1/chat/completions", strings.NewReader(bedChat))
		resp, err := client.Do(req)
		if err == nil {
			r.status = resp.StatusCode
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != http.StatusOK:
				err = fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
			case !strings.Contains(string(b), `"choices"`):
				err = fmt.Errorf("no choices in %s", b)
			}
		}
		r.done, r.err = time.Now(), err
		l.mu.Lock()
		l.res = append(l.res, r)
		l.mu.Unlock()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			l.wg.Add(1)
			go one()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

// stop ends the load, waits for the requests in flight and returns every
// result in the order they were sent.
func (l *load) stop() []loadResult {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.SortFunc(l.res, func(a, b loadResult) int { return a.sent.Compare(b.sent) })
	return l.res
}

// loadSummary is what the user saw of a load around a fault at t0.
type loadSummary struct {
	sent, failed int
	// recover is from t0 until the last request that failed or took more
	// than a second ended: when answers were normal again.
	recover time.Duration
	slowest time.Duration
	errs    []string
	// unclean counts the failures that were not a 502 or 503 answer with
	// an error body from the gateway (no answer, a timeout, another code).
	unclean int
	res     []loadResult
}

// lateFailures counts the requests sent after t that failed.
func (s loadSummary) lateFailures(t time.Time) int {
	n := 0
	for _, r := range s.res {
		if r.err != nil && r.sent.After(t) {
			n++
		}
	}
	return n
}

// check fails the test when a request failed uncleanly, or failed though
// it was sent more than 2 s after the replica was ready again (placed
// after the fault at t0).
func (s loadSummary) check(t *testing.T, t0 time.Time, placed time.Duration) {
	t.Helper()
	if s.unclean > 0 {
		t.Errorf("%d of %d requests failed without a clean 502/503 answer from the gateway (%q)", s.unclean, s.sent, s.errs)
	}
	if n := s.lateFailures(t0.Add(placed + 2*time.Second)); n > 0 {
		t.Errorf("%d requests sent more than 2 s after the replica was ready again failed (%q)", n, s.errs)
	}
}

func summarise(res []loadResult, t0 time.Time) loadSummary {
	s := loadSummary{res: res}
	for _, r := range res {
		s.sent++
		took := r.done.Sub(r.sent)
		s.slowest = max(s.slowest, took)
		if r.err != nil {
			s.failed++
			if r.status != http.StatusBadGateway && r.status != http.StatusServiceUnavailable {
				s.unclean++
			}
			// The distinct kinds of failure, shortened: the status and
			// the start of the message.
			e := r.err.Error()
			if len(e) > 140 {
				e = e[:140] + "…"
			}
			if len(s.errs) < 4 && !slices.Contains(s.errs, e) {
				s.errs = append(s.errs, e)
			}
		}
		if (r.err != nil || took > time.Second) && r.done.After(t0) {
			s.recover = max(s.recover, r.done.Sub(t0))
		}
	}
	return s
}

// waitLoadOK waits until the load has answered a request sent after t,
// and fails the test when none comes within d.
func (l *load) waitOK(t *testing.T, after time.Time, d time.Duration) {
	t.Helper()
	if !Eventually(d, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, r := range l.res {
			if r.err == nil && r.sent.After(after) {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no request sent after %v answered within %v", after.Format("15:04:05.000"), d)
	}
}

// faultPool starts a bed of one gateway node C (no GPU, the model imported
// there) and gpus GPU nodes, and waits until C sees them all alive.
func faultPool(t *testing.T, k faultKit, networks, gpus int) (*Bed, *BedNode, []*BedNode) {
	t.Helper()
	bed := NewBed(t, k.docker, k.image, networks)
	c := bed.Up("c")
	var gs []*BedNode
	for i := range gpus {
		gs = append(gs, bed.Join(fmt.Sprintf("g%d", i), faultGPU...))
	}
	for _, g := range gs {
		if !Eventually(30*time.Second, func() bool { return c.Sees(g.PeerID, "alive") }) {
			t.Fatalf("c never sees %s alive", g.Name)
		}
	}
	return bed, c, gs
}

// A member killed while serving: requests stream at 5/s through C's
// gateway while the container of the node running the replica is killed
// (SIGKILL, replica and all). The replica is placed on the other GPU node,
// requests are answered again, and no ledger oversells a card.
func faultKill(t *testing.T, k faultKit) {
	_, c, gs := faultPool(t, k, 1, 2)
	k.importModel(t, c, "tiny", 1<<20)
	k.deploy(t, c, "ref", "tiny")
	first := waitReadyOn(t, c, "ref", 60*time.Second, func(psRun) bool { return true })
	victim := byPeer(t, gs, first.Node)
	l := startLoad(c.Gateway(), loadEvery)
	l.waitOK(t, time.Now(), 30*time.Second)
	t0 := time.Now()
	victim.Kill()
	var detect time.Duration
	if Eventually(30*time.Second, func() bool { return !c.Sees(victim.PeerID, "alive") }) {
		detect = time.Since(t0)
	}
	again := waitReadyOn(t, c, "ref", 60*time.Second, func(r psRun) bool { return r.Node != victim.PeerID })
	placed := time.Since(t0)
	l.waitOK(t, time.Now(), 30*time.Second)
	s := summarise(l.stop(), t0)
	t.Logf("scenario=kill detect=%v placed=%v recover=%v failed=%d sent=%d slowest=%v errors=%q",
		detect.Round(time.Millisecond), placed.Round(time.Millisecond), s.recover.Round(time.Millisecond), s.failed, s.sent, s.slowest.Round(time.Millisecond), s.errs)
	if detect == 0 {
		t.Errorf("c still lists the killed node %s alive 30 s after the kill", victim.Name)
	}
	if again.Node == victim.PeerID {
		t.Errorf("replica after the kill on %s, the killed node", again.Node)
	}
	var alive []*BedNode
	for _, n := range append([]*BedNode{c}, gs...) {
		if n != victim {
			alive = append(alive, n)
		}
	}
	oneCommitted(t, alive, "ref", 30*time.Second)
	s.check(t, t0, placed)
}

// modelState is the state n's cache gives model name ("" when unlisted).
func modelState(n *BedNode, name string) string {
	var ms []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	if n.TryJSON(&ms, "weights", "ls") != nil {
		return ""
	}
	for _, m := range ms {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// A node rebooted: the container of the only GPU node is killed and
// started again on the same home and address. It rejoins (C sees it alive
// again), its weight cache still holds the model, its replica runs again
// (the old process died with the container: adopted or cleaned, one
// replica and one reservation in the end) and requests through C are
// answered again.
func faultReboot(t *testing.T, k faultKit) {
	_, c, gs := faultPool(t, k, 1, 1)
	g := gs[0]
	k.importModel(t, c, "tiny", 1<<20)
	k.deploy(t, c, "ref", "tiny")
	waitReadyOn(t, c, "ref", 60*time.Second, func(r psRun) bool { return r.Node == g.PeerID })
	if st := modelState(g, "tiny"); st != "complete" {
		t.Fatalf("g0's cache has tiny %q before the reboot; want complete", st)
	}
	l := startLoad(c.Gateway(), loadEvery)
	l.waitOK(t, time.Now(), 30*time.Second)
	t0 := time.Now()
	g.Kill()
	g.Start()
	up := time.Since(t0)
	var rejoin time.Duration
	if Eventually(30*time.Second, func() bool { return c.Sees(g.PeerID, "alive") && g.Sees(c.PeerID, "alive") }) {
		rejoin = time.Since(t0)
	}
	if st := modelState(g, "tiny"); st != "complete" {
		t.Errorf("g0's cache has tiny %q after the reboot; want complete (the cache survives)", st)
	}
	again := waitReadyOn(t, c, "ref", 60*time.Second, func(r psRun) bool { return r.Node == g.PeerID })
	placed := time.Since(t0)
	l.waitOK(t, time.Now(), 30*time.Second)
	s := summarise(l.stop(), t0)
	t.Logf("scenario=reboot detect=%v up=%v placed=%v recover=%v failed=%d sent=%d slowest=%v adopted=%v errors=%q",
		rejoin.Round(time.Millisecond), up.Round(time.Millisecond), placed.Round(time.Millisecond), s.recover.Round(time.Millisecond), s.failed, s.sent, s.slowest.Round(time.Millisecond), again.Adopted, s.errs)
	if rejoin == 0 {
		t.Errorf("c and g0 never list each other alive after the reboot")
	}
	oneCommitted(t, []*BedNode{c, g}, "ref", 30*time.Second)
	s.check(t, t0, placed)
	if !Eventually(30*time.Second, func() bool { return len(readyRuns(g, "ref")) == 1 }) {
		t.Errorf("g0 lists ready replicas %+v after the reboot; want one", readyRuns(g, "ref"))
	}
}

// A node leaving gracefully: `shoal leave` on the node running the
// replica while requests stream through C. C sees it as left (not dead),
// the replica is placed on the other GPU node, and requests are answered
// again; requests that failed while in flight to the leaving node are
// counted (inflight-failed), the others wait in C's gateway.
func faultLeave(t *testing.T, k faultKit) {
	_, c, gs := faultPool(t, k, 1, 2)
	k.importModel(t, c, "tiny", 1<<20)
	k.deploy(t, c, "ref", "tiny")
	first := waitReadyOn(t, c, "ref", 60*time.Second, func(psRun) bool { return true })
	leaver := byPeer(t, gs, first.Node)
	l := startLoad(c.Gateway(), loadEvery)
	l.waitOK(t, time.Now(), 30*time.Second)
	t0 := time.Now()
	if err := leaver.Leave(); err != nil {
		t.Fatal(err)
	}
	left := time.Since(t0)
	tl := time.Now()
	var detect time.Duration
	if Eventually(30*time.Second, func() bool { return c.Sees(leaver.PeerID, "left") }) {
		detect = time.Since(t0)
	}
	again := waitReadyOn(t, c, "ref", 60*time.Second, func(r psRun) bool { return r.Node != leaver.PeerID })
	placed := time.Since(t0)
	l.waitOK(t, time.Now(), 30*time.Second)
	s := summarise(l.stop(), t0)
	// In flight: sent before `shoal leave` returned; a drain lets them
	// finish.
	inflight := s.failed - s.lateFailures(tl)
	t.Logf("scenario=leave detect=%v leave=%v placed=%v recover=%v failed=%d sent=%d inflight-failed=%d slowest=%v errors=%q",
		detect.Round(time.Millisecond), left.Round(time.Millisecond), placed.Round(time.Millisecond), s.recover.Round(time.Millisecond), s.failed, s.sent, inflight, s.slowest.Round(time.Millisecond), s.errs)
	if detect == 0 {
		t.Errorf("c never lists %s as left", leaver.Name)
	}
	if again.Node == leaver.PeerID {
		t.Errorf("replica after the leave on the node that left")
	}
	var rest []*BedNode
	for _, n := range append([]*BedNode{c}, gs...) {
		if n != leaver {
			rest = append(rest, n)
		}
	}
	oneCommitted(t, rest, "ref", 30*time.Second)
	s.check(t, t0, placed)
}

// A partition of 2 from 3 members and its healing. Five nodes: {c, g0, x}
// on network 0, {g1, y} on networks 0 and 1; the partition cuts g1 and y
// from network 0. g0 and g1 have the GPUs and the model; requests stream
// through c throughout. Each side places the replica on its own GPU;
// after the merge exactly one replica runs, every ledger holds one
// committed reservation between them with no card oversold, and every
// node's credits ledger has the same root.
func faultPartition(t *testing.T, k faultKit) {
	bed := NewBed(t, k.docker, k.image, 2)
	c := bed.UpOn("c", []int{0})
	g0 := bed.JoinOn("g0", []int{0}, faultGPU...)
	x := bed.JoinOn("x", []int{0})
	g1 := bed.Join("g1", faultGPU...)
	y := bed.Join("y")
	all := []*BedNode{c, g0, x, g1, y}
	for _, n := range all {
		if !Eventually(30*time.Second, func() bool {
			for _, m := range all {
				if !n.Sees(m.PeerID, "alive") {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("%s never sees all five alive", n.Name)
		}
	}
	k.importModel(t, g0, "tiny", 1<<20)
	k.importModel(t, g1, "tiny", 1<<20)
	k.deploy(t, c, "ref", "tiny")
	waitReadyOn(t, c, "ref", 60*time.Second, func(psRun) bool { return true })
	l := startLoad(c.Gateway(), loadEvery)
	l.waitOK(t, time.Now(), 30*time.Second)
	t0 := time.Now()
	bed.Partition([]*BedNode{c, g0, x}, []*BedNode{g1, y})
	var detect, minority time.Duration
	if Eventually(30*time.Second, func() bool { return !c.Sees(g1.PeerID, "alive") && !y.Sees(g0.PeerID, "alive") }) {
		detect = time.Since(t0)
	}
	// g1 and y may have talked over network 0: they then find each other
	// again on network 1 only when the mesh dials there.
	if Eventually(90*time.Second, func() bool { return y.Sees(g1.PeerID, "alive") && g1.Sees(y.PeerID, "alive") }) {
		minority = time.Since(t0)
	}
	waitReadyOn(t, c, "ref", 60*time.Second, func(r psRun) bool { return r.Node == g0.PeerID })
	waitReadyOn(t, y, "ref", 60*time.Second, func(r psRun) bool { return r.Node == g1.PeerID })
	split := time.Since(t0)
	t1 := time.Now()
	bed.HealAll()
	var merged time.Duration
	if Eventually(60*time.Second, func() bool {
		for _, n := range all {
			for _, m := range all {
				if !n.Sees(m.PeerID, "alive") {
					return false
				}
			}
		}
		return true
	}) {
		merged = time.Since(t1)
	}
	var runs [][]psRun
	one := Eventually(60*time.Second, func() bool {
		runs = runs[:0]
		ok := true
		for _, n := range all {
			r := readyRuns(n, "ref")
			runs = append(runs, r)
			ok = ok && len(r) == 1 && r[0].ID == runs[0][0].ID
		}
		return ok
	})
	single := time.Since(t1)
	l.waitOK(t, time.Now(), 30*time.Second)
	ls := summarise(l.stop(), t0)
	oneCommitted(t, all, "ref", 30*time.Second)
	var roots []string
	var receipts int
	agree := Eventually(30*time.Second, func() bool {
		roots = roots[:0]
		for _, n := range all {
			var cr struct {
				Root     string `json:"root"`
				Receipts int    `json:"receipts"`
			}
			if n.TryJSON(&cr, "credits") != nil {
				return false
			}
			roots, receipts = append(roots, cr.Root), cr.Receipts
		}
		return len(slices.Compact(slices.Clone(roots))) == 1
	})
	t.Logf("scenario=partition detect=%v recover=%v minority-together=%v both-sides-placed=%v merge=%v one-replica=%v receipts=%d failed=%d sent=%d slowest=%v errors=%q",
		detect.Round(time.Millisecond), ls.recover.Round(time.Millisecond), minority.Round(time.Millisecond), split.Round(time.Millisecond), merged.Round(time.Millisecond), single.Round(time.Millisecond), receipts,
		ls.failed, ls.sent, ls.slowest.Round(time.Millisecond), ls.errs)
	if detect == 0 {
		t.Errorf("the sides never saw each other gone")
	}
	if merged == 0 {
		t.Errorf("the pool never merged again: every node should see all five alive")
	}
	if !one {
		t.Errorf("after the merge the nodes list ready replicas %+v; want the same one everywhere", runs)
	}
	ls.check(t, t0, split)
	if !agree {
		t.Errorf("credits roots after the merge = %q; want one root on all five", roots)
	}
}

// A seeder dropping mid-transfer: S holds a 96 MiB model; A pulls it
// whole, then B pulls it from both and S is killed once B reports a tenth
// or more. B's pull completes from A and B's cache holds the model
// complete. detect is from the kill to B's first progress line naming one
// peer (lines come at each tenth, so it is coarse); recover is from the
// kill to the end of B's pull.
func faultSeeder(t *testing.T, k faultKit) {
	bed := NewBed(t, k.docker, k.image, 1)
	s := bed.Up("s")
	a := bed.Join("a")
	b := bed.Join("b")
	for _, n := range []*BedNode{a, b} {
		if !Eventually(30*time.Second, func() bool { return n.Sees(s.PeerID, "alive") }) {
			t.Fatalf("%s never sees s alive", n.Name)
		}
	}
	k.importModel(t, s, "big", 96<<20)
	for _, n := range []*BedNode{a, b} {
		if !Eventually(30*time.Second, func() bool { return modelState(n, "big") == "remote" }) {
			t.Fatalf("%s never lists big as remote (state %q)", n.Name, modelState(n, "big"))
		}
	}
	ta := time.Now()
	if _, _, err := a.Exec("weights", "pull", "big"); err != nil {
		t.Fatal(err)
	}
	pullA := time.Since(ta)
	if !Eventually(30*time.Second, func() bool {
		var ms []struct {
			Name  string `json:"name"`
			Peers int    `json:"peers"`
		}
		if b.TryJSON(&ms, "weights", "ls") != nil {
			return false
		}
		return len(ms) == 1 && ms[0].Peers == 2
	}) {
		t.Fatal("b never sees two holders of big")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.docker, "exec", b.Name, "shoal", "weights", "pull", "big")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	tb := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill S once B has part of the model: its first progress line at
	// 10 % or more (lines come at each tenth).
	lines := bufio.NewScanner(stderr)
	var progress []string
	at := -1
	for at < 0 && lines.Scan() {
		progress = append(progress, lines.Text())
		var pct int
		if f := strings.Fields(lines.Text()); len(f) > 2 {
			fmt.Sscanf(f[2], "%d%%", &pct)
		}
		if pct >= 10 && pct < 100 {
			at = pct
		}
	}
	tk := time.Now()
	s.Kill()
	var detect time.Duration
	for lines.Scan() {
		progress = append(progress, lines.Text())
		if detect == 0 && strings.Contains(lines.Text(), " 1 peers ") {
			detect = time.Since(tk)
		}
	}
	werr := cmd.Wait()
	pullB := time.Since(tb)
	t.Logf("scenario=seeder detect=%v recover=%v killed-at=%d%% pull-a=%v pull-b=%v failed=%d sent=1",
		detect.Round(time.Millisecond), time.Since(tk).Round(time.Millisecond), at, pullA.Round(time.Millisecond), pullB.Round(time.Millisecond), map[bool]int{true: 1, false: 0}[werr != nil])
	t.Logf("b's pull:\n%s", strings.Join(progress, "\n"))
	if at < 0 {
		t.Errorf("b's pull never reported partial progress before it ended: the seeder was not killed mid-transfer")
	}
	if werr != nil {
		t.Fatalf("b's pull after the seeder died: %v", werr)
	}
	if st := modelState(b, "big"); st != "complete" {
		t.Errorf("b's cache has big %q; want complete", st)
	}
	if pullB > 90*time.Second {
		t.Errorf("b's pull took %v", pullB)
	}
}
