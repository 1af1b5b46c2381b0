package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTemplate writes a template file for deploy -f.
func writeTemplate(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "t.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// dumpOnFailure logs ps and the end of every node's log when t failed.
func dumpOnFailure(t *testing.T, nodes []*Node) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		out, _, _ := Run(t, "--home", nodes[0].Home, "ps")
		t.Logf("ps:\n%s", out)
		for i, n := range nodes {
			if b, err := os.ReadFile(filepath.Join(n.Home, "daemon.log")); err == nil {
				t.Logf("node %d log ends:\n%s", i, b[max(0, len(b)-3000):])
			}
		}
	})
}

// A replica whose program exits at once: its node gives up after the
// supervisor's restarts, reports it failed with the program's last words,
// and releases its GPU; the coordinator places it on the other node, where
// it fails too; after three failures the deployment is failed with the
// reason, nothing holds a GPU and no process is left.
func TestFailedReplicaFreesItsGPU(t *testing.T) {
	wl := testTool(t, "workload")
	nodes, ids := startPool(t, [][]string{{"--gpu", "RTX 3060:12GiB"}, {"--gpu", "RTX 3060:12GiB"}})
	dumpOnFailure(t, nodes)
	tpl := writeTemplate(t, `apiVersion: shoal/v1
kind: Template
metadata:
  name: broken
spec:
  kind: service
  resources:
    gpus: 1
    cpu: 0.1
    memory: 16MiB
  runtime:
    command: [`+wl+`, fail, "no config at /etc/broken.yaml"]
    port: 8000
    health: /health
    startTimeout: 10s
  scaling:
    minReplicas: 1
`)
	start := time.Now()
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "deploy", "-f", tpl, "--name", "broken"); err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	// First: a failed replica shows in ps with the reason while its GPU is
	// already free on its node.
	var firstNode string
	if !Eventually(60*time.Second, func() bool {
		for _, r := range nodes[0].ps()["broken"].Runs {
			if r.State == "failed" {
				firstNode = r.Node
				return true
			}
		}
		return false
	}) {
		t.Fatal("no replica of broken ever shows failed in ps")
	}
	t.Logf("first failure after %v on %s", time.Since(start), firstNode)
	n := nodes[indexOf(ids, firstNode)]
	if !Eventually(10*time.Second, func() bool {
		l := n.ledger(t)
		for _, r := range l.Reservations {
			if r.Deployment == "broken" {
				return false
			}
		}
		return l.Free.GPUs[0].Milli == 1000
	}) {
		t.Fatalf("the failed replica's node still holds %+v", n.ledger(t).Reservations)
	}
	// Then: placed again, preferring the other node; after three failures
	// the deployment is failed for good.
	var d deployment
	if !Eventually(90*time.Second, func() bool {
		d = nodes[1].ps()["broken"]
		return d.Status.State == "failed"
	}) {
		t.Fatalf("broken is %q (%s); want failed", d.Status.State, d.Status.Reason)
	}
	t.Logf("deployment failed after %v: %s", time.Since(start), d.Status.Reason)
	if !strings.Contains(d.Status.Reason, "failed 3 times") || !strings.Contains(d.Status.Reason, "no config at /etc/broken.yaml") {
		t.Errorf("reason %q; want the count and the program's last words", d.Status.Reason)
	}
	failedOn := map[string]bool{}
	for _, r := range d.Runs {
		if r.State == "failed" {
			failedOn[r.Node] = true
		}
	}
	if len(failedOn) != 2 {
		t.Errorf("replicas failed on %d nodes (%v); want both: the coordinator prefers another node", len(failedOn), failedOn)
	}
	// Nothing holds a GPU, no process is left, and it stays that way.
	check := func() bool {
		for _, n := range nodes {
			l := n.ledger(t)
			if len(l.Reservations) != 0 || l.Free.GPUs[0].Milli != 1000 || replicaProcesses(t, n.Home) {
				return false
			}
		}
		return true
	}
	if !Eventually(15*time.Second, check) {
		t.Fatalf("after failing: ledgers %+v, %+v; want every GPU free and no replica", nodes[0].ledger(t), nodes[1].ledger(t))
	}
	time.Sleep(3 * time.Second) // a failed deployment must not be placed again
	if !check() {
		t.Errorf("a failed deployment was placed again: %+v, %+v", nodes[0].ledger(t), nodes[1].ledger(t))
	}
	if out, err := exec.Command("pgrep", "-f", wl+" fail").Output(); err == nil && len(out) > 0 {
		t.Errorf("workload processes left: %s", out)
	}
}
