package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/runtime/runtimetest"
)

// serveTemplate is the reference workload on one whole (declared) GPU as
// a process, scaling to zero after 3 s without traffic.
var serveTemplate = refTemplate("", 0, "3s")

var (
	refOnce sync.Once
	refBin  string
	refErr  error
)

// referenceBinary builds shoal-reference beside the shoal binary, where
// the daemon's replica runner looks for it.
func referenceBinary(t testing.TB) string {
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
	model, imp := referenceModel(t, ref, "tiny")
	// The model is imported on M; A alone has a GPU (so it pulls the
	// weights from M); requests go to C.
	nodes, _ := startPool(t, [][]string{nil, {"--gpu", "RTX 4090:24GiB:16384", "--runtime", "process"}, nil})
	m, a, c := nodes[0], nodes[1], nodes[2]
	m.Shoal("weights", "add", imp, "--name", "tiny")
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
	c.Shoal("deploy", "-f", tpl, "--set", "model=tiny", "--name", "ref")
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
	// `shoal nodes` on C shows A's GPU reserved (from A's record).
	aID := a.PeerID()
	if !Eventually(10*time.Second, func() bool { return gpuReserved(t, c, aID) == 1000 }) {
		t.Fatalf("shoal nodes on C: A's GPU reserved %d milli-GPU while the replica runs; want 1000", gpuReserved(t, c, aID))
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
	if !Eventually(10*time.Second, func() bool { return gpuReserved(t, c, aID) == 0 }) {
		t.Fatalf("shoal nodes on C: A's GPU still reserved %d milli-GPU after the idle timeout; want 0", gpuReserved(t, c, aID))
	}
	if out, _, err := Run(t, "--home", c.Home, "nodes"); err != nil || !strings.Contains(out, "RESERVED") {
		t.Errorf("shoal nodes on C = %q, %v; want a RESERVED column", out, err)
	}
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
	a.Shoal("scale", "ref", "1")
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
	c.Shoal("rm", "ref")
	if !Eventually(20*time.Second, func() bool {
		return len(a.ledger(t).Reservations) == 0 && !replicaProcesses(t, a.Home)
	}) {
		t.Errorf("after rm A still holds %+v", a.ledger(t))
	}
	t.Logf("rm: replica stopped and GPU free in %v", time.Since(rmAt))
}

// gpuReserved is how much of the first GPU of member peer the pool has
// promised, in milli-GPU, as `shoal nodes -o json` on n shows it (the free
// capacity in the member's record); -1 when n knows no announcement of it.
func gpuReserved(t testing.TB, n *Node, peer string) int64 {
	t.Helper()
	var ms []node.Member
	n.JSON(&ms, "nodes")
	for _, m := range ms {
		if m.PeerID != peer || len(m.GPUs) == 0 || m.Free == nil {
			continue
		}
		for _, f := range m.Free.GPUs {
			if f.UUID == m.GPUs[0].UUID {
				return 1000 - f.Milli
			}
		}
	}
	return -1
}

// referenceModel generates a reference model called name with ref and
// returns its directory and a copy holding the model files alone, for
// `weights add` (the cache writes the manifest the workload checks when it
// materialises the directory).
func referenceModel(t testing.TB, ref, name string) (model, imp string) {
	t.Helper()
	model = filepath.Join(t.TempDir(), name)
	if err := runtimetest.GenerateModel(ref, model, name, 1<<20); err != nil {
		t.Fatal(err)
	}
	imp = filepath.Join(t.TempDir(), name)
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
	return model, imp
}

// refTemplate is the reference workload on one whole (declared) GPU with
// minReplicas replicas (0: scale to zero after idle without traffic), as a
// process or, with image set, a container of that image.
func refTemplate(image string, minReplicas int, idle string) string {
	run := `    command: [shoal-reference]
`
	if image != "" {
		run = "    image: " + image + "\n"
	}
	return `apiVersion: shoal/v1
kind: Template
metadata:
  name: reference-gpu
  description: the reference workload on one GPU
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
` + run + `    args: [--model-dir, "${shoal.modelDir}", --served-model-name, "${shoal.servedName}"]
    port: 8000
    health: /health
    startTimeout: 20s
  weights:
    model: ${model}
  scaling:
    minReplicas: ` + strconv.Itoa(minReplicas) + `
    maxReplicas: 1
    idleTimeout: ` + idle + `
`
}

// deployTemplate deploys template text as name with model on n.
func deployTemplate(t testing.TB, n *Node, text, name, model string) {
	t.Helper()
	tpl := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(tpl, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Shoal("deploy", "-f", tpl, "--set", "model="+model, "--name", name)
}

// psRun is the part of a replica in `shoal ps -o json` these tests read.
type psRun struct {
	ID         string             `json:"id"`
	Deployment string             `json:"deployment"`
	Node       string             `json:"node"`
	State      string             `json:"state"`
	Reason     string             `json:"reason"`
	Backend    string             `json:"backend"`
	Ref        string             `json:"ref"`
	Adopted    bool               `json:"adopted"`
	Start      *node.StartTimings `json:"start"`
}

// runs is every replica of dep that n lists.
func (n *Node) runs(dep string) []psRun {
	var ds []struct {
		ID   string  `json:"id"`
		Runs []psRun `json:"runs"`
	}
	n.JSON(&ds, "ps")
	for _, d := range ds {
		if d.ID == dep {
			return d.Runs
		}
	}
	return nil
}

// readyRun waits until n lists one ready replica of dep and returns it.
func readyRun(t testing.TB, n *Node, dep string, within time.Duration) psRun {
	t.Helper()
	var got []psRun
	if !Eventually(within, func() bool {
		got = n.runs(dep)
		return len(got) == 1 && got[0].State == "ready"
	}) {
		t.Fatalf("replicas of %s = %+v; want one ready", dep, got)
	}
	return got[0]
}

// gateway is the address of n's gateway as a base URL.
func (n *Node) gateway(t testing.TB) string {
	t.Helper()
	var st struct {
		Gateway string `json:"gateway"`
	}
	n.JSON(&st, "status")
	if st.Gateway == "" {
		t.Fatalf("status of %s names no gateway", n.Home)
	}
	return "http://" + st.Gateway
}

// replicaAlive says whether the replica a backend runs as ref is still
// running: a process group leader, or a container.
type replicaAlive func(ref string) bool

func processAlive(ref string) bool {
	pid, err := strconv.Atoi(ref)
	if err != nil || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !bytes.Contains(b, []byte(") Z "))
}

// testAdoption: a daemon killed with SIGKILL leaves its replica running;
// started again on the same home it adopts it (same process or container,
// not restarted; the gateway answers through it), and a replica whose
// deployment was removed while the daemon was down is stopped and removed.
// started, when set, learns of every node the test starts.
func testAdoption(t *testing.T, runtimeFlag, image string, alive replicaAlive, started func(*Node)) {
	note := func(n *Node) *Node {
		if started != nil {
			started(n)
		}
		return n
	}
	ref := referenceBinary(t)
	_, imp := referenceModel(t, ref, "tiny")
	flags := []string{"--gpu", "RTX 4090:24GiB:16384", "--runtime", runtimeFlag}

	// One node: its replica is adopted.
	a := note(Up(t, NewHome(t), flags...))
	logOnFailure(t, a)
	a.Shoal("weights", "add", imp, "--name", "tiny")
	deployTemplate(t, a, refTemplate(image, 1, "10m"), "ref", "tiny")
	first := readyRun(t, a, "ref", 30*time.Second)
	before, _ := chat(t, a.gateway(t))
	persisted(t, a, "ref")
	a.Kill()
	if !alive(first.Ref) {
		t.Fatalf("replica %s %s died with its daemon", first.Backend, first.Ref)
	}
	killedAt := time.Now()
	a = Up(t, a.Home, flags...)
	got := readyRun(t, a, "ref", 20*time.Second)
	t.Logf("%s replica %s adopted %v after the daemon's restart began", got.Backend, shortID(got.Ref), time.Since(killedAt))
	if !got.Adopted || got.Ref != first.Ref || got.Backend != runtimeFlag {
		t.Fatalf("after the restart the replica is %+v; want %s %s adopted", got, runtimeFlag, first.Ref)
	}
	after, _ := chat(t, a.gateway(t))
	if after.Choices[0].Message.Content != before.Choices[0].Message.Content {
		t.Fatalf("answer through the adopted replica = %q; want %q", after.Choices[0].Message.Content, before.Choices[0].Message.Content)
	}

	// Two nodes: B removes the deployment while A is down.
	b := Up(t, NewHome(t))
	a2 := note(Join(t, NewHome(t), b.Token(), flags...))
	logOnFailure(t, a2)
	a2.Shoal("weights", "add", imp, "--name", "tiny")
	deployTemplate(t, b, refTemplate(image, 1, "10m"), "gone", "tiny")
	doomed := readyRun(t, a2, "gone", 30*time.Second)
	persisted(t, a2, "gone")
	aID := a2.PeerID()
	a2.Kill()
	if !Eventually(20*time.Second, func() bool { return StateOf(b.Nodes(), aID) != "alive" }) {
		t.Fatal("B never noticed that A is down")
	}
	b.Shoal("rm", "gone")
	if !alive(doomed.Ref) {
		t.Fatalf("replica %s died with its daemon", doomed.Ref)
	}
	a2 = Up(t, a2.Home, flags...)
	if !Eventually(30*time.Second, func() bool { return !alive(doomed.Ref) && len(a2.runs("gone")) == 0 }) {
		t.Fatalf("replica %s of the removed deployment still runs after A's restart (runs %+v)", doomed.Ref, a2.runs("gone"))
	}
	// The reservation goes when the coordinator releases it, or at the
	// latest when its lease (30 s, renewed by no one now) ends.
	if !Eventually(40*time.Second, func() bool { return len(a2.ledger(t).Reservations) == 0 }) {
		t.Errorf("A's ledger after the restart: %+v; want no reservation", a2.ledger(t))
	}
}

// persisted waits until n's home holds the record of deployment dep (the
// daemon writes its records every second), so a SIGKILL does not lose it.
func persisted(t *testing.T, n *Node, dep string) {
	t.Helper()
	if !Eventually(10*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(n.Home, "deployments.json"))
		return err == nil && bytes.Contains(b, []byte(`"id":"`+dep+`"`))
	}) {
		t.Fatalf("%s/deployments.json never holds %s", n.Home, dep)
	}
}

// logOnFailure logs the end of n's daemon log when the test fails.
func logOnFailure(t *testing.T, n *Node) {
	home := n.Home
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(home, "daemon.log")); err == nil {
				t.Logf("daemon log of %s ends:\n%s", home, b[max(0, len(b)-6000):])
			}
		}
	})
}

func shortID(ref string) string { return ref[:min(12, len(ref))] }

// With the process backend.
func TestServeAdoptsProcessAfterDaemonKill(t *testing.T) {
	testAdoption(t, "process", "", processAlive, nil)
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
