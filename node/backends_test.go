package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

func TestConfigRuntime(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"", RuntimeAuto, true},
		{RuntimeAuto, RuntimeAuto, true},
		{RuntimeProcess, RuntimeProcess, true},
		{RuntimeDocker, RuntimeDocker, true},
		{"podman", "", false},
	} {
		c := DefaultConfig()
		c.Home, c.Runtime = t.TempDir(), tt.in
		err := c.validate()
		if tt.ok && (err != nil || c.Runtime != tt.want) {
			t.Errorf("validate(Runtime %q) = %v, Runtime %q; want nil, %q", tt.in, err, c.Runtime, tt.want)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("validate(Runtime %q) = %v; want ErrInvalidConfig", tt.in, err)
		}
	}
}

// Without a Docker engine the rule is simple: process where the template
// has a command, a clear error where it has only an image.
func TestRuntimesPickWithoutEngine(t *testing.T) {
	process := &runtime.Process{}
	both := runtime.Spec{Deployment: "d", Image: "img:1", Command: []string{"srv"}, GPUUUIDs: []string{"GPU-decl"}}
	imageOnly := runtime.Spec{Deployment: "d", Image: "img:1"}
	commandOnly := runtime.Spec{Deployment: "d", Command: []string{"srv"}}
	gangBoth := runtime.Spec{Deployment: "g", Image: "img:1", Command: []string{"srv"}, Env: map[string]string{EnvGangRank: "0"}}
	gangImage := runtime.Spec{Deployment: "g", Image: "img:1", Env: map[string]string{EnvGangRank: "1"}}
	for _, tt := range []struct {
		name string
		mode string
		spec runtime.Spec
		ok   bool
	}{
		{"auto, both", RuntimeAuto, both, true},
		{"auto, command", "", commandOnly, true},
		{"auto, image only", RuntimeAuto, imageOnly, false},
		{"process, both", RuntimeProcess, both, true},
		{"process, image only", RuntimeProcess, imageOnly, false},
		{"docker, command only", RuntimeDocker, commandOnly, false},
		// Gang members run as processes (their links listen on loopback).
		{"auto, gang member with both", RuntimeAuto, gangBoth, true},
		{"process, gang member with both", RuntimeProcess, gangBoth, true},
		{"docker, gang member with both", RuntimeDocker, gangBoth, false},
		{"auto, gang member with an image only", RuntimeAuto, gangImage, false},
	} {
		rt := runtimes{mode: tt.mode, pool: "pool-1", declared: map[string]bool{"GPU-decl": true}}
		s := tt.spec
		be, err := rt.pick(context.Background(), process, &s, "res-1")
		switch {
		case tt.ok && (err != nil || be != runtime.Backend(process)):
			t.Errorf("%s: pick = %v, %v; want the process backend", tt.name, be, err)
		case !tt.ok && !errors.Is(err, ErrRuntime):
			t.Errorf("%s: pick = %v, %v; want ErrRuntime", tt.name, be, err)
		}
		if s.Labels[runtime.LabelPool] != "pool-1" || s.Labels[runtime.LabelReservation] != "res-1" {
			t.Errorf("%s: labels %v; want pool and reservation", tt.name, s.Labels)
		}
		if s.DeclaredGPUs != (len(s.GPUUUIDs) > 0) {
			t.Errorf("%s: DeclaredGPUs = %v for GPUs %v", tt.name, s.DeclaredGPUs, s.GPUUUIDs)
		}
	}
}

// --runtime docker on a machine whose engine does not answer fails at
// start, naming the flag.
func TestOpenRuntimesDockerWithoutEngine(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, _, err := openRuntimes(context.Background(), RuntimeDocker, t.TempDir(), "me", "pool", nil, log)
	if !errors.Is(err, ErrRuntime) {
		t.Fatalf("openRuntimes(docker) without an engine = %v; want ErrRuntime", err)
	}
	be, rt, err := openRuntimes(context.Background(), RuntimeAuto, t.TempDir(), "me", "pool",
		[]hardware.GPU{{Name: "RTX 4090", VRAMTotalBytes: 24 << 30}}, log)
	if err != nil || be == nil || rt.docker != nil || len(rt.declared) != 1 {
		t.Fatalf("openRuntimes(auto) without an engine = %v, %+v, %v; want processes and one declared GPU", be, rt, err)
	}
	t.Logf("status says: %s", rt.summary)
}

// A restarted runner adopts the replica the last run left on a committed
// reservation (same process, not restarted) and removes one whose
// reservation is gone.
func TestReplicaRunnerAdoptsWhatTheLastRunLeft(t *testing.T) {
	home := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	led, err := openLedger(home, ledger.Capacity{GPUs: []ledger.GPU{{UUID: "GPU-1", VRAMBytes: 24 << 30}}, CPUMilli: 4000, MemoryBytes: 8 << 30}, time.Now, log)
	if err != nil {
		t.Fatal(err)
	}
	res := coordinator.Reservation{ID: "sleeper/0001-0001-me#0/1", Deployment: "sleeper", Holder: "me", Slot: slotOn("me", "GPU-1")}
	if a := led.serve(coordinator.Call{Op: coordinator.OpReserve, Reservation: &res, LeaseMillis: 60_000}); a.Refused != nil || a.Error != "" {
		t.Fatalf("reserve = %+v", a)
	}
	led.serve(coordinator.Call{Op: coordinator.OpCommit, IDs: []string{res.ID}, LeaseMillis: 60_000})
	var committed ledger.Reservation
	for _, x := range led.view().Reservations {
		committed = x
	}

	// What a killed daemon left: a replica on the committed reservation
	// and one on a reservation released while it was down.
	be, err := runtime.NewProcess(runtime.ProcessConfig{Dir: filepath.Join(home, ReplicasDir), Owner: "me"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	leave := func(id, reservation string) runtime.Replica {
		r, err := be.Start(ctx, runtime.Spec{ReplicaID: id, Deployment: "sleeper", Command: []string{"sleep", "3600"},
			Labels: map[string]string{runtime.LabelReservation: reservation}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { be.Remove(context.Background(), id) })
		return r
	}
	kept := leave(runtimeID(committed), res.ID)
	gone := leave("sleeper-0123456789abcdef", "sleeper/0001-0002-me#0/1")

	rec := coordinator.Record{ID: "sleeper", Spec: coordinator.Spec{Name: "sleeper", Template: "sleeper", Source: sleepTemplate}}
	r := &replicaRunner{
		self: "me", backend: be, led: led, version: "test", log: log, runs: map[string]*replicaRun{},
		record: func(dep string) (coordinator.Record, bool) { return rec, dep == rec.ID },
	}
	newReplicaRunner(r)
	defer r.close()

	if _, err := be.Inspect(ctx, gone.ID); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("the replica of a released reservation (pid %s) is still there after the start: %v", gone.Ref, err)
	}
	if !eventually(10*time.Second, func() bool {
		l := r.list()
		return len(l) == 1 && l[0].State == PhaseReady
	}) {
		t.Fatalf("replicas = %+v; want one ready", r.list())
	}
	got := r.list()[0]
	if !got.Adopted || got.Ref != kept.Ref || got.Backend != "process" || got.Start == nil {
		t.Fatalf("replica = %+v; want pid %s adopted by the process backend, with start timings", got, kept.Ref)
	}
}

// A replica kept for a reservation whose deployment record never arrives
// goes when the daemon stops: nothing outlives a graceful stop.
func TestReplicaRunnerCloseRemovesUnadopted(t *testing.T) {
	home := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	led, err := openLedger(home, ledger.Capacity{GPUs: []ledger.GPU{{UUID: "GPU-1", VRAMBytes: 24 << 30}}, CPUMilli: 4000, MemoryBytes: 8 << 30}, time.Now, log)
	if err != nil {
		t.Fatal(err)
	}
	res := coordinator.Reservation{ID: "unknown/0001-0001-me#0/1", Deployment: "unknown", Holder: "me", Slot: slotOn("me", "GPU-1")}
	led.serve(coordinator.Call{Op: coordinator.OpReserve, Reservation: &res, LeaseMillis: 60_000})
	led.serve(coordinator.Call{Op: coordinator.OpCommit, IDs: []string{res.ID}, LeaseMillis: 60_000})
	be, err := runtime.NewProcess(runtime.ProcessConfig{Dir: filepath.Join(home, ReplicasDir), Owner: "me"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	left, err := be.Start(ctx, runtime.Spec{ReplicaID: runtimeID(led.view().Reservations[0]), Deployment: "unknown",
		Command: []string{"sleep", "3600"}, Labels: map[string]string{runtime.LabelReservation: res.ID}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Remove(context.Background(), left.ID) })
	r := &replicaRunner{
		self: "me", backend: be, led: led, version: "test", log: log, runs: map[string]*replicaRun{},
		record: func(string) (coordinator.Record, bool) { return coordinator.Record{}, false },
	}
	newReplicaRunner(r)
	if _, err := be.Inspect(ctx, left.ID); err != nil {
		t.Fatalf("the replica waiting for its record was removed at start: %v", err)
	}
	r.close()
	if _, err := be.Inspect(ctx, left.ID); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("after close the replica waiting for its record is still there: %v", err)
	}
}
