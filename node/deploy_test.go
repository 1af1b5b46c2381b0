package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

const testSlice = `apiVersion: shoal/v1
kind: Template
metadata:
  name: slice
  description: test
parameters:
  - name: vram
    type: string
    default: 4GiB
    description: memory
  - name: fraction
    type: float
    default: "0.5"
    description: share
spec:
  kind: job
  priority: batch
  resources:
    gpus: 1
    gpuFraction: ${fraction}
    minVRAM: ${vram}
  runtime:
    command: [sleep, "1"]
`

// testDeployer is one in-process member: a real mesh node and its
// deployment service.
type testDeployer struct {
	m   *mesh.Node
	s   *deployService
	inv hardware.Inventory
}

// startDeployers starts a pool with one GPU of vram[i] GiB per member and a
// deployment service on each; wrap[i], when set, wraps member i's
// transport.
func startDeployers(t *testing.T, vram []uint64, wrap map[int]func(coordinator.Transport) coordinator.Transport) []*testDeployer {
	t.Helper()
	ms := meshtest.Pool(t, len(vram), meshtest.Fast)
	out := make([]*testDeployer, len(ms))
	for i, m := range ms {
		inv := meshtest.Inventory(fmt.Sprintf("GPU-%d", i), vram[i])
		m.SetInventory(inv)
		s, err := newDeployService(deployConfig{
			Self: m.ID(), Home: t.TempDir(), Version: "test", Members: m, Streams: m, Announce: m, Inv: inv,
			Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
			Coordinator:  coordinator.Config{HoldLease: 3 * time.Second, CommitLease: 6 * time.Second, ResyncEvery: time.Second},
			StepInterval: 50 * time.Millisecond,
			wrap:         wrap[i],
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		out[i] = &testDeployer{m: m, s: s, inv: inv}
	}
	if !meshtest.Eventually(20*time.Second, func() bool {
		for _, d := range out {
			if !meshtest.Sees(d.m, ms, mesh.StateAlive) {
				return false
			}
		}
		return true
	}) {
		t.Fatal("members do not see one another")
	}
	return out
}

func ids(ds []*testDeployer) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.m.ID().String())
	}
	return out
}

func (d *testDeployer) get(name string) coordinator.Record {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	r, _ := d.s.store.Get(name)
	return r
}

// committedOf counts the committed and held reservations of dep on ds.
func committedOf(ds []*testDeployer, dep string) (committed, held int) {
	for _, d := range ds {
		for _, r := range d.s.led.view().Reservations {
			if r.Deployment != dep {
				continue
			}
			if r.State == ledger.StateCommitted {
				committed++
			} else {
				held++
			}
		}
	}
	return committed, held
}

// A deployment submitted on one member is placed by its coordinator; the
// status reaches every member.
func TestDeployPlacedOverMesh(t *testing.T) {
	ds := startDeployers(t, []uint64{24, 24, 80}, nil)
	start := time.Now()
	if _, err := ds[0].s.submit(DeployRequest{Name: "web", TemplateYAML: testSlice, Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	if !meshtest.Eventually(10*time.Second, func() bool { return ds[0].get("web").Status.State == coordinator.StatePlaced }) {
		t.Fatalf("web = %+v; want placed", ds[0].get("web").Status)
	}
	t.Logf("placed 2 replicas %v after the submission", time.Since(start).Round(time.Millisecond))
	if c, h := committedOf(ds, "web"); c != 2 || h != 0 {
		t.Errorf("ledgers hold %d committed and %d held; want 2 and 0", c, h)
	}
	for i, d := range ds {
		if !meshtest.Eventually(5*time.Second, func() bool { return len(d.get("web").Status.Replicas) == 2 }) {
			t.Errorf("member %d sees %+v", i, d.get("web").Status)
		}
	}
	// The free capacity reaches the records the others plan from.
	owner := coordinator.Owner("web", ids(ds))
	if !meshtest.Eventually(5*time.Second, func() bool {
		for _, m := range ds[0].m.Members() {
			if m.Record == nil || m.Record.Free == nil {
				return false
			}
		}
		return true
	}) {
		t.Errorf("member 0 never saw every member's free capacity (coordinator %s)", owner)
	}
}

// The coordinator dies between two reservations: one replica committed,
// the next one held, then silence. The next member by rendezvous adopts the
// deployment, gives back the orphaned hold (its lease would also expire)
// and places the replicas on the live members.
func TestDeployCoordinatorKilledMidPlacement(t *testing.T) {
	vram := []uint64{24, 24, 24, 24}
	// Find the members' IDs first: build the pool, then pick a name whose
	// owner is not member 0 (the submitter).
	var victim atomic.Int32
	victim.Store(-1)
	var killedAt atomic.Int64
	var ds []*testDeployer
	var once sync.Once
	wrap := map[int]func(coordinator.Transport) coordinator.Transport{}
	for i := 1; i < len(vram); i++ {
		wrap[i] = func(inner coordinator.Transport) coordinator.Transport {
			return &freezing{inner: inner, after: 3, armed: func() bool { return int(victim.Load()) == i }, kill: func() {
				once.Do(func() {
					killedAt.Store(time.Now().UnixNano())
					go ds[i].m.Close()
				})
			}}
		}
	}
	ds = startDeployers(t, vram, wrap)
	all := ids(ds)
	var name string
	for k := 0; ; k++ {
		name = fmt.Sprintf("svc-%d", k)
		if coordinator.Owner(name, all) != all[0] {
			break
		}
	}
	v := indexOf(all, coordinator.Owner(name, all))
	victim.Store(int32(v))
	if _, err := ds[0].s.submit(DeployRequest{Name: name, TemplateYAML: testSlice, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if !meshtest.Eventually(5*time.Second, func() bool { return killedAt.Load() != 0 }) {
		t.Fatal("the coordinator never reached its second reservation")
	}
	var live []*testDeployer
	for i, d := range ds {
		if i != v {
			live = append(live, d)
		}
	}
	next := coordinator.Rank(name, all)[1]
	ok := meshtest.Eventually(20*time.Second, func() bool {
		r := ds[0].get(name)
		if r.Status.State != coordinator.StatePlaced || r.Status.Coordinator != next {
			return false
		}
		c, h := committedOf(live, name)
		return c == 3 && h == 0
	})
	c, h := committedOf(live, name)
	if !ok {
		t.Fatalf("after the coordinator died: %+v; live ledgers %d committed, %d held; want placed by %s with 3 committed", ds[0].get(name).Status, c, h, next)
	}
	t.Logf("coordinator died mid-placement; the next one placed the deployment %v later",
		time.Since(time.Unix(0, killedAt.Load())).Round(time.Millisecond))
}

// freezing passes calls through until the after-th reserve or commit, then
// kills its member and never answers.
type freezing struct {
	inner coordinator.Transport
	after int
	armed func() bool
	kill  func()
	n     atomic.Int32
}

func (f *freezing) Call(ctx context.Context, node string, c coordinator.Call) (coordinator.Answer, error) {
	a, err := f.inner.Call(ctx, node, c)
	if f.armed() && (c.Op == coordinator.OpReserve || c.Op == coordinator.OpCommit) && int(f.n.Add(1)) == f.after {
		f.kill()
		<-ctx.Done()
		return coordinator.Answer{}, ctx.Err()
	}
	return a, err
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

// Two coordinators race for the only card that can hold their requests:
// its node admits one and refuses the other, which queues with the reason.
func TestDeployRaceForLastGPU(t *testing.T) {
	ds := startDeployers(t, []uint64{80, 8, 8}, nil)
	all := ids(ds)
	var names []string
	owners := map[string]bool{}
	for k := 0; len(names) < 2; k++ {
		n := fmt.Sprintf("big-%d", k)
		if o := coordinator.Owner(n, all); !owners[o] {
			owners[o] = true
			names = append(names, n)
		}
	}
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ds[i+1].s.submit(DeployRequest{Name: n, TemplateYAML: testSlice, Params: map[string]string{"vram": "60GiB", "fraction": "0.9"}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	settled := func() (placed, queued int) {
		for _, n := range names {
			switch ds[0].get(n).Status.State {
			case coordinator.StatePlaced:
				placed++
			case coordinator.StateQueued:
				queued++
			}
		}
		return
	}
	if !meshtest.Eventually(10*time.Second, func() bool { p, q := settled(); return p == 1 && q == 1 }) {
		t.Fatalf("statuses %+v and %+v; want one placed and one queued", ds[0].get(names[0]).Status, ds[0].get(names[1]).Status)
	}
	for i := 0; i < 10; i++ { // stays so for a while
		time.Sleep(100 * time.Millisecond)
		if p, q := settled(); p != 1 || q != 1 {
			t.Fatalf("placed %d, queued %d; want 1 and 1", p, q)
		}
		if l := ds[0].s.led.view(); len(l.Reservations) != 1 || l.Free.GPUs[0].Milli < 0 || l.Free.GPUs[0].VRAMBytes < 0 {
			t.Fatalf("the card's ledger: %+v; want one reservation within capacity", l)
		}
	}
}
