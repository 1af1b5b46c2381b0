package node

import (
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

const sleepTemplate = `apiVersion: shoal/v1
kind: Template
metadata:
  name: sleeper
  description: a process without an HTTP endpoint
spec:
  kind: job
  resources:
    gpus: 1
  runtime:
    command: [sleep, "3600"]
`

// A committed reservation gets a running replica; releasing it stops and
// removes the replica (no process, no state file left).
func TestReplicaRunnerFollowsLedger(t *testing.T) {
	home := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	led, err := openLedger(home, ledger.Capacity{GPUs: []ledger.GPU{{UUID: "GPU-1", VRAMBytes: 24 << 30}}, CPUMilli: 4000, MemoryBytes: 8 << 30}, time.Now, log)
	if err != nil {
		t.Fatal(err)
	}
	be, err := runtime.NewProcess(runtime.ProcessConfig{Dir: filepath.Join(home, ReplicasDir), Owner: "me"})
	if err != nil {
		t.Fatal(err)
	}
	rec := coordinator.Record{ID: "sleeper", Spec: coordinator.Spec{Name: "sleeper", Template: "sleeper", Source: sleepTemplate}}
	r := &replicaRunner{
		self: "me", backend: be, led: led, version: "test", log: log, runs: map[string]*replicaRun{},
		record: func(dep string) (coordinator.Record, bool) { return rec, dep == rec.ID },
	}
	newReplicaRunner(r)
	defer r.close()

	res := coordinator.Reservation{ID: "sleeper/0001-0001-me#0/1", Deployment: "sleeper", Holder: "me",
		Slot: slotOn("me", "GPU-1")}
	if a := led.serve(coordinator.Call{Op: coordinator.OpReserve, Reservation: &res, LeaseMillis: 60_000}); a.Refused != nil || a.Error != "" {
		t.Fatalf("reserve = %+v", a)
	}
	led.serve(coordinator.Call{Op: coordinator.OpCommit, IDs: []string{res.ID}, LeaseMillis: 60_000})

	ready := func() []ReplicaRun {
		var out []ReplicaRun
		for _, x := range r.list() {
			if x.State == PhaseReady {
				out = append(out, x)
			}
		}
		return out
	}
	if !eventually(10*time.Second, func() bool { return len(ready()) == 1 }) {
		t.Fatalf("replicas = %+v; want one ready", r.list())
	}
	if got := ready()[0]; got.Deployment != "sleeper" || len(got.GPUs) != 1 || got.GPUs[0] != "GPU-1" {
		t.Errorf("replica = %+v; want sleeper on GPU-1", got)
	}

	led.serve(coordinator.Call{Op: coordinator.OpRelease, IDs: []string{res.ID}})
	if !eventually(20*time.Second, func() bool {
		left, _ := filepath.Glob(filepath.Join(home, ReplicasDir, "*.json"))
		return len(r.list()) == 0 && len(left) == 0
	}) {
		t.Fatalf("after release: replicas %+v; want none and no state file", r.list())
	}
}

// A scale-to-zero deployment is in use while some gateway saw traffic
// within its idle timeout.
func TestInUse(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	rec := coordinator.Record{ID: "d", Spec: coordinator.Spec{ScaleToZero: true, IdleTimeout: 3 * time.Second}}
	for _, tt := range []struct {
		name string
		seen time.Duration // ago; negative: never
		want bool
	}{
		{"never", -1, false},
		{"just now", 0, true},
		{"within the timeout", 2 * time.Second, true},
		{"past the timeout", 3 * time.Second, false},
	} {
		act := newActivity()
		if tt.seen >= 0 {
			act.note("d", now.Add(-tt.seen))
		}
		s := &deployService{cfg: deployConfig{Activity: act}}
		if got := s.inUse(rec, now); got != tt.want {
			t.Errorf("%s: inUse = %v; want %v", tt.name, got, tt.want)
		}
	}
}

// Runtime IDs of any reservation are valid backend IDs.
func TestRuntimeID(t *testing.T) {
	long := "a-very-long-deployment-name-that-goes-on-and-on-and-on-for-sixty"
	for _, res := range []ledger.Reservation{
		{ID: "x/0001-0001-abc#0/1", Deployment: "x"},
		{ID: long + "/0001-0001-abc#3/4", Deployment: long},
	} {
		s := runtime.Spec{ReplicaID: runtimeID(res), Command: []string{"true"}}
		if err := s.Validate(); err != nil {
			t.Errorf("runtimeID(%q) = %q: %v", res.ID, s.ReplicaID, err)
		}
	}
}

func slotOn(node, gpu string) scheduler.Slot {
	return scheduler.Slot{Node: node, GPUs: []scheduler.GPUShare{{UUID: gpu, Milli: scheduler.MilliPerGPU}}}
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The ledger wakes the replica runner when a reservation is committed,
// released, evicted or expires, and not when one is only held or renewed.
func TestLedgerSettlesOnCommitAndRelease(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := testLedger(t, t.TempDir(), &now)
	settled := func() bool {
		select {
		case <-s.settled:
			return true
		default:
			return false
		}
	}
	steps := []struct {
		name string
		call coordinator.Call
		want bool
	}{
		{"reserve", reserveCall("r1#0/1", 500, 10*time.Second), false},
		{"commit", coordinator.Call{Op: coordinator.OpCommit, IDs: []string{"r1#0/1"}, LeaseMillis: 60_000}, true},
		{"renew", coordinator.Call{Op: coordinator.OpRenew, IDs: []string{"r1#0/1"}, LeaseMillis: 60_000}, false},
		{"commit unknown", coordinator.Call{Op: coordinator.OpCommit, IDs: []string{"nope"}, LeaseMillis: 60_000}, false},
		{"release", coordinator.Call{Op: coordinator.OpRelease, IDs: []string{"r1#0/1"}}, true},
		{"release again", coordinator.Call{Op: coordinator.OpRelease, IDs: []string{"r1#0/1"}}, false},
		{"reserve r2", reserveCall("r2#0/1", 500, 5*time.Second), false},
	}
	for _, st := range steps {
		s.serve(st.call)
		if got := settled(); got != st.want {
			t.Errorf("after %s: settled %v; want %v", st.name, got, st.want)
		}
	}
	now = now.Add(10 * time.Second)
	if gone := s.expire(); len(gone) != 1 || !settled() {
		t.Errorf("expire dropped %d and settled %v; want 1 and true", len(gone), settled())
	}
}

func TestLastTrafficNeverInTheFuture(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		ms   int64
		want time.Time
	}{
		{1500, now.Add(-1500 * time.Millisecond)},
		{0, now},
		{-60_000, now},
		{math.MaxInt64, now.Add(-24 * time.Hour)},
		{math.MinInt64, now},
	} {
		if got := lastTraffic(now, c.ms); !got.Equal(c.want) {
			t.Errorf("lastTraffic(now, %d) = %v; want %v", c.ms, got, c.want)
		}
	}
}
