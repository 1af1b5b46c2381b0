package test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
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

// serveTemplate is the reference workload on one whole (declared) GPU,
// scaling to zero after 3 s without traffic.
const serveTemplate = `apiVersion: shoal/v1
kind: Template
metadata:
  name: reference-gpu
  description: the reference workload on one GPU, idle after 3 s
parameters:
  - name: model
    type: string
    required: true
    description: the reference model's name or ID
spec:
  kind: service
  priority: inference
  resources:
    gpus: 1
    cpu: 0.1
    memory: 64MiB
  runtime:
    command: [shoal-reference]
    args: [--model-dir, "${shoal.modelDir}", --served-model-name, "${shoal.servedName}"]
    port: 8000
    health: /health
    startTimeout: 20s
  weights:
    model: ${model}
  scaling:
    minReplicas: 0
    maxReplicas: 1
    idleTimeout: 3s
`

var (
	refOnce sync.Once
	refBin  string
	refErr  error
)

// referenceBinary builds shoal-reference beside the shoal binary, where
// the daemon's replica runner looks for it.
func referenceBinary(t *testing.T) string {
	t.Helper()
	bin := Binary(t)
	refOnce.Do(func() { refBin, refErr = runtimetest.BuildReference(filepath.Dir(bin)) })
	if refErr != nil {
		t.Fatal(refErr)
	}
	return refBin
}

type chatAnswer struct {
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
}

const chatBody = `{"model":"ref","messages":[{"role":"user","content":"where do the fish swim?"}],"max_tokens":12}`

func chat(t *testing.T, base string) (chatAnswer, time.Duration) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", strings.NewReader(chatBody))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s/v1/chat/completions: %v", base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s/v1/chat/completions = %d %s; want 200", base, resp.StatusCode, b)
	}
	var a chatAnswer
	if err := json.Unmarshal(b, &a); err != nil || len(a.Choices) != 1 {
		t.Fatalf("answer %s: %v; want one choice", b, err)
	}
	return a, took
}

// medianChat sends n chat requests to base one after the other and
// returns the median latency.
func medianChat(t *testing.T, base string, n int) time.Duration {
	t.Helper()
	ds := make([]time.Duration, n)
	for i := range ds {
		_, ds[i] = chat(t, base)
	}
	slices.Sort(ds)
	return ds[n/2]
}

// direct runs the reference workload on dir by hand and asks it.
func direct(t *testing.T, ref, dir string) chatAnswer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(ref, "--model-dir", dir, "--served-model-name", "ref", "--listen", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if !Eventually(10*time.Second, func() bool {
		r, err := http.Get("http://" + addr + "/health")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	}) {
		t.Fatal("reference workload run by hand never became healthy")
	}
	a, _ := chat(t, "http://"+addr)
	return a
}

// The scenario: a three-node pool, a reference model imported on
// one node and pulled by the one with a GPU, deployed to scale to zero; a chat request sent
// to a node that runs nothing gets the answer the workload gives directly;
// after the idle timeout the replica is gone and the GPU free on the
// ledger; the next request starts it again.
func TestServeScaleToZero(t *testing.T) {
	ref := referenceBinary(t)
	model := filepath.Join(t.TempDir(), "tiny")
	if err := runtimetest.GenerateModel(ref, model, "tiny", 1<<20); err != nil {
		t.Fatal(err)
	}
	// The import holds the model files alone; the cache writes the
	// manifest the workload checks when it materialises the directory.
	imp := filepath.Join(t.TempDir(), "tiny")
	if err := os.Mkdir(imp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "vocab.txt", "weights.bin"} {
		b, err := os.ReadFile(filepath.Join(model, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(imp, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The model is imported on M; A alone has a GPU (so it pulls the
	// weights from M); requests go to C.
	nodes, _ := startPool(t, [][]string{nil, {"--gpu", "RTX 4090:24GiB:16384"}, nil})
	m, a, c := nodes[0], nodes[1], nodes[2]
	if _, stderr, err := Run(t, "--home", m.Home, "weights", "add", imp, "--name", "tiny"); err != nil {
		t.Fatalf("weights add: %v\n%s", err, stderr)
	}
	// Wait until A knows the name from M's record, so the cold start below
	// measures the fetch rather than the record's way to A.
	if !Eventually(20*time.Second, func() bool {
		var ms []struct {
			Name string `json:"name"`
		}
		a.JSON(&ms, "weights", "ls")
		return len(ms) == 1 && ms[0].Name == "tiny"
	}) {
		t.Fatal("A never lists model tiny")
	}
	tpl := filepath.Join(t.TempDir(), "ref.yaml")
	if err := os.WriteFile(tpl, []byte(serveTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := Run(t, "--home", c.Home, "deploy", "-f", tpl, "--set", "model=tiny", "--name", "ref"); err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	var st struct {
		Gateway string `json:"gateway"`
	}
	c.JSON(&st, "status")
	if st.Gateway == "" {
		t.Fatal("status of C names no gateway")
	}
	base := "http://" + st.Gateway
	// Cold: nothing runs until the first request.
	if d := c.ps()["ref"]; len(d.Status.Replicas) != 0 {
		t.Fatalf("ref has %d replicas before any request; want 0 (scale to zero)", len(d.Status.Replicas))
	}
	want := direct(t, ref, model)

	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := Run(t, "--home", c.Home, "ps")
			t.Logf("ps on C:\n%s", out)
			if b, err := os.ReadFile(filepath.Join(a.Home, "daemon.log")); err == nil {
				t.Logf("A's log ends:\n%s", b[max(0, len(b)-4000):])
			}
		}
	})
	got, cold := chat(t, base)
	if got.Choices[0].Message.Content != want.Choices[0].Message.Content {
		t.Fatalf("answer through C's gateway = %q; want %q (the workload's own)", got.Choices[0].Message.Content, want.Choices[0].Message.Content)
	}
	var sa struct {
		Gateway string `json:"gateway"`
	}
	a.JSON(&sa, "status")
	warmRemote, warmLocal := medianChat(t, base, 20), medianChat(t, "http://"+sa.Gateway, 20)
	t.Logf("cold start through a remote gateway %v; warm (median of 20): through C (remote) %v, through A (local) %v", cold, warmRemote, warmLocal)
	if b, err := os.ReadFile(filepath.Join(a.Home, "daemon.log")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "replica ready") {
				t.Logf("A: %s", line[strings.Index(line, "msg="):])
			}
		}
	}
	if l := a.ledger(t); len(l.Reservations) != 1 || l.Free.GPUs[0].Milli != 0 {
		t.Fatalf("A's ledger while serving: %+v; want one reservation holding the GPU", l)
	}

	// Idle: the replica goes and the GPU is free again.
	idleFrom := time.Now()
	if !Eventually(20*time.Second, func() bool {
		l := a.ledger(t)
		return len(l.Reservations) == 0 && l.Free.GPUs[0].Milli == 1000 && !replicaProcesses(t, a.Home) &&
			len(c.ps()["ref"].Runs) == 0
	}) {
		t.Fatalf("after the idle timeout A's ledger is %+v; want the GPU free and no replica", a.ledger(t))
	}
	t.Logf("released %v after the last request (idle timeout 3 s)", time.Since(idleFrom))
	if d := c.ps()["ref"]; len(d.Status.Replicas) != 0 {
		t.Errorf("ps after the idle timeout lists %d replicas; want 0", len(d.Status.Replicas))
	}

	// The next request starts it again.
	again, cold2 := chat(t, base)
	if again.Choices[0].Message.Content != want.Choices[0].Message.Content {
		t.Errorf("answer after scale to zero = %q; want %q", again.Choices[0].Message.Content, want.Choices[0].Message.Content)
	}
	t.Logf("second cold start %v (weights already local)", cold2)

	// scale 1: the replica stays past the idle timeout.
	if _, stderr, err := Run(t, "--home", a.Home, "scale", "ref", "1"); err != nil {
		t.Fatalf("scale: %v\n%s", err, stderr)
	}
	time.Sleep(4500 * time.Millisecond) // past the 3 s idle timeout: nothing should happen
	if l := a.ledger(t); len(l.Reservations) != 1 {
		t.Errorf("after scale 1 and 4.5 s without traffic A holds %d reservations; want 1", len(l.Reservations))
	}

	// logs: the output on the node that runs it; elsewhere, where it runs.
	out, stderr, err := Run(t, "--home", a.Home, "logs", "ref")
	if err != nil || !strings.Contains(out, "== replica ref-") {
		t.Errorf("logs on A = %q, %v %s; want the replica's output after its header", out, err, stderr)
	}
	out, _, err = Run(t, "--home", c.Home, "logs", "ref")
	if err != nil || !strings.Contains(out, "run `shoal logs ref` there") {
		t.Errorf("logs on C = %q, %v; want it to name the node that runs the replica", out, err)
	}

	// A model nobody serves: 404 in OpenAI's error format.
	resp, err := http.Post(base+"/v1/chat/completions", "application/json",
		bytes.NewReader([]byte(`{"model":"nobody","messages":[{"role":"user","content":"hi"}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !bytes.Contains(b, []byte(`"error"`)) {
		t.Errorf("unknown model = %d %s; want 404 with an error object", resp.StatusCode, b)
	}
	// C's gateway counted what it did on the daemon's /metrics.
	metrics := controlGet(t, c.Home, "/metrics")
	for _, want := range []string{`shoal_gateway_requests_total{`, `code="404"`, `shoal_gateway_cold_starts_total{deployment="ref"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("C's /metrics lacks %s", want)
		}
	}

	// rm stops the replica and frees the GPU.
	rmAt := time.Now()
	if _, stderr, err := Run(t, "--home", c.Home, "rm", "ref"); err != nil {
		t.Fatalf("rm: %v\n%s", err, stderr)
	}
	if !Eventually(20*time.Second, func() bool {
		return len(a.ledger(t).Reservations) == 0 && !replicaProcesses(t, a.Home)
	}) {
		t.Errorf("after rm A still holds %+v", a.ledger(t))
	}
	t.Logf("rm: replica stopped and GPU free in %v", time.Since(rmAt))
}

// replicaProcesses reports whether the process backend of home still has
// a replica (a state file in HOME/replicas).
func replicaProcesses(t *testing.T, home string) bool {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(home, "replicas", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m) > 0
}

// controlGet fetches path from the daemon of home over its control socket.
func controlGet(tb testing.TB, home, path string) string {
	tb.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(home, "control.sock"))
	}}}
	resp, err := c.Get("http://shoal" + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
