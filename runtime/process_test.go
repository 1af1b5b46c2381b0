package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/runtime"
)

func newProcess(t *testing.T, dir, owner string) *runtime.Process {
	t.Helper()
	p, err := runtime.NewProcess(runtime.ProcessConfig{Dir: dir, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func referenceSpec(id string) runtime.Spec {
	return runtime.Spec{
		ReplicaID:    id,
		Deployment:   "my-deployment",
		Command:      []string{referenceBin},
		Args:         []string{"--model-dir", "${shoal.modelDir}", "--served-model-name", "${shoal.servedName}"},
		HealthPath:   "/health",
		StartTimeout: 20 * time.Second,
		ModelDir:     modelDir,
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func modelsID(t *testing.T, endpoint string) string {
	t.Helper()
	resp, err := http.Get(endpoint + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got.Data) != 1 {
		t.Fatalf("/v1/models: %v %+v", err, got)
	}
	return got.Data[0].ID
}

func logs(t *testing.T, b runtime.Backend, id string) string {
	t.Helper()
	rc, err := b.Logs(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out, _ := io.ReadAll(rc)
	return string(out)
}

func TestProcessReferenceServesAndStops(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := newProcess(t, dir, "node-a")
	start := time.Now()
	r, err := runtime.StartHealthy(ctx, p, referenceSpec("ref-1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("process start to healthy: %v", time.Since(start))
	if !strings.HasPrefix(r.Endpoint, "http://127.0.0.1:") || r.State != runtime.StateRunning {
		t.Fatalf("replica = %+v; want running on loopback", r)
	}
	if got := modelsID(t, r.Endpoint); got != "my-deployment" {
		t.Errorf("/v1/models id = %q; want the deployment name", got)
	}
	if l := logs(t, p, "ref-1"); !strings.Contains(l, `serving model "tiny-reference" as "my-deployment"`) {
		t.Errorf("logs = %q; want the serving line", l)
	}
	if err := p.Stop(ctx, "ref-1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := p.Inspect(ctx, "ref-1")
	if err != nil || got.State != runtime.StateExited || got.ExitCode != 0 {
		t.Fatalf("after Stop: %+v, %v; want exited with 0 (SIGTERM handled)", got, err)
	}
	if err := p.Remove(ctx, "ref-1"); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("Remove left %v", left)
	}
	if _, err := p.Inspect(ctx, "ref-1"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Inspect after Remove = %v; want ErrNotFound", err)
	}
}

func TestProcessEnvironmentAndGroupKill(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := newProcess(t, dir, "node-a")
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	s := runtime.Spec{
		ReplicaID:    "env-1",
		Deployment:   "d",
		Command:      []string{"sh", "-c", `echo "gpus=$CUDA_VISIBLE_DEVICES vram=$SHOAL_VRAM_LIMIT_MIB frac=$SHOAL_GPU_FRACTION host=$HOST port=$PORT model=$SHOAL_MODEL_DIR extra=$EXTRA arg=$0"; sleep 300 & echo $! > ` + pidFile + `; wait`},
		Args:         []string{"${shoal.gpuMemoryUtilization}"},
		Env:          map[string]string{"EXTRA": "x-${shoal.vramLimitMiB}", "CUDA_VISIBLE_DEVICES": "all"},
		GPUUUIDs:     []string{"GPU-1111", "GPU-2222"},
		VRAMLimitMiB: 6144,
		GPUFraction:  0.25,
		ModelDir:     "/some/model",
	}
	r, err := p.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	port := strings.TrimPrefix(r.Endpoint, "http://127.0.0.1:")
	want := "gpus=GPU-1111,GPU-2222 vram=6144 frac=0.25 host=127.0.0.1 port=" + port + " model=/some/model extra=x-6144 arg=0.25"
	eventually(t, 5*time.Second, "environment line in the log", func() bool {
		return strings.Contains(logs(t, p, "env-1"), want)
	})
	var grandchild int
	eventually(t, 5*time.Second, "grandchild pid written", func() bool {
		b, _ := os.ReadFile(pidFile)
		grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return grandchild > 0
	})
	if err := p.Remove(ctx, "env-1"); err != nil {
		t.Fatal(err)
	}
	// The sleep in the replica's group is killed with it. It is not our
	// child, so it disappears once init reaps it.
	eventually(t, 5*time.Second, "grandchild gone after Remove", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(grandchild) + "/stat")
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

func TestProcessAdoptionAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	first := newProcess(t, dir, "node-a")
	r, err := runtime.StartHealthy(ctx, first, referenceSpec("ref-adopt"))
	if err != nil {
		t.Fatal(err)
	}
	// A restarted daemon: a new backend over the same directory.
	second := newProcess(t, dir, "node-a")
	list, err := second.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "ref-adopt" || list[0].State != runtime.StateRunning || list[0].Endpoint != r.Endpoint {
		t.Fatalf("List after restart = %+v; want ref-adopt running at %s", list, r.Endpoint)
	}
	if other, _ := newProcess(t, dir, "node-b").List(ctx); len(other) != 0 {
		t.Fatalf("another owner lists %+v; want nothing", other)
	}
	if err := second.Remove(ctx, "ref-adopt"); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(r.Endpoint + "/health"); err == nil {
		t.Fatal("adopted replica still answers after Remove")
	}
}

func TestProcessFaultsLeaveNothingBehind(t *testing.T) {
	ctx := context.Background()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	badModel := t.TempDir() // no manifest
	tests := []struct {
		name string
		edit func(*runtime.Spec)
		want error
		says string // in the error, for the user
	}{
		{"port clash", func(s *runtime.Spec) { s.HostPort = busyPort }, runtime.ErrPortInUse, strconv.Itoa(busyPort)},
		{"no such command", func(s *runtime.Spec) { s.Command = []string{"/nonexistent/engine"} }, runtime.ErrStart, "/nonexistent/engine"},
		{"bad model", func(s *runtime.Spec) { s.ModelDir = badModel }, runtime.ErrExited, "refusing to start"},
		{"never healthy", func(s *runtime.Spec) {
			s.Command, s.Args = []string{"sleep", "300"}, nil
			s.StartTimeout = 300 * time.Millisecond
		}, runtime.ErrUnhealthy, "not healthy after"},
		{"unknown placeholder", func(s *runtime.Spec) { s.Args = []string{"${shoal.nope}"} }, runtime.ErrUnknownMarker, "shoal.nope"},
		{"bad id", func(s *runtime.Spec) { s.ReplicaID = "../x" }, runtime.ErrInvalidSpec, "../x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newProcess(t, dir, "node-a")
			s := referenceSpec("fault")
			tt.edit(&s)
			_, err := runtime.StartHealthy(ctx, p, s)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("StartHealthy = %v; want %v saying %q", err, tt.want, tt.says)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
				t.Fatalf("left behind %v", left)
			}
		})
	}
}

func TestProcessStopKillsAfterGrace(t *testing.T) {
	ctx := context.Background()
	p := newProcess(t, t.TempDir(), "node-a")
	r, err := p.Start(ctx, runtime.Spec{ReplicaID: "stubborn", Command: []string{"sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "trap installed", func() bool { return strings.Contains(logs(t, p, r.ID), "ready") })
	start := time.Now()
	if err := p.Stop(ctx, r.ID, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got, _ := p.Inspect(ctx, r.ID)
	if got.State != runtime.StateExited || got.ExitCode != 128+int(syscall.SIGKILL) {
		t.Fatalf("after Stop: %+v; want killed by SIGKILL", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %v", d)
	}
	p.Remove(ctx, r.ID)
}
