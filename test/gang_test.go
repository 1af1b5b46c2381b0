package test

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// trioTemplate: three members, one GPU each, of the test workload in gang
// mode; a member is healthy once it reached every peer through the
// address the pool handed it.
func trioTemplate(wl string) string {
	return `apiVersion: shoal/v1
kind: Template
metadata:
  name: trio
parameters:
  - name: failRank
    type: int
    default: "-1"
spec:
  kind: gang
  resources:
    gpus: 1
    cpu: 0.1
    memory: 16MiB
  gang:
    placement: spread
    roles:
      - name: worker
        count: 3
        runtime:
          command: [` + wl + `, gang, --fail-rank, "${failRank}"]
          port: 9000
          health: /health
          startTimeout: 30s
`
}

// A gang of three on three nodes starts once every member is committed;
// each member learns its rank and its peers' addresses and reaches them
// (across nodes, through the mesh); then a gang whose member of rank 1
// cannot start is released whole, every time, until it is failed.
func TestGangStartsWholeAndFailsWhole(t *testing.T) {
	wl := testTool(t, "workload")
	gpu := []string{"--gpu", "RTX 4090:24GiB"}
	nodes, ids := startPool(t, [][]string{gpu, gpu, gpu})
	dumpOnFailure(t, nodes)
	tpl := writeTemplate(t, trioTemplate(wl))
	start := time.Now()
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "deploy", "-f", tpl, "--name", "trio"); err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	var d deployment
	if !Eventually(60*time.Second, func() bool {
		d = nodes[0].ps()["trio"]
		ready := 0
		for _, r := range d.Runs {
			if r.State == "ready" {
				ready++
			}
		}
		return ready == 3
	}) {
		t.Fatalf("trio never has 3 ready members: %+v", d.Runs)
	}
	t.Logf("3 members ready (each reached the other two) %v after deploy", time.Since(start))
	on := map[string]bool{}
	for _, r := range d.Runs {
		on[r.Node] = true
	}
	if len(on) != 3 {
		t.Errorf("members run on %d nodes; want 3 (one GPU each)", len(on))
	}
	// Ask a member through a gateway what it saw.
	var st struct {
		Gateway string `json:"gateway"`
	}
	nodes[1].JSON(&st, "status")
	resp, err := http.Get("http://" + st.Gateway + "/d/trio/peers")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var peers struct {
		Rank    int      `json:"rank"`
		Size    int      `json:"size"`
		Peers   []string `json:"peers"`
		Reached int      `json:"reached"`
	}
	if err := json.Unmarshal(b, &peers); err != nil || peers.Size != 3 || len(peers.Peers) != 3 || peers.Reached != 2 {
		t.Errorf("/d/trio/peers = %s (%v); want size 3, 3 peers, 2 reached", b, err)
	}
	if _, stderr, err := Run(t, "--home", nodes[2].Home, "rm", "trio"); err != nil {
		t.Fatalf("rm: %v\n%s", err, stderr)
	}
	free := func() bool {
		for _, n := range nodes {
			if len(n.ledger(t).Reservations) != 0 || replicaProcesses(t, n.Home) {
				return false
			}
		}
		return true
	}
	if !Eventually(20*time.Second, free) {
		t.Fatal("after rm a node still holds a member")
	}

	// Rank 1 cannot start: the gang is released whole and, after three
	// failures, failed.
	start = time.Now()
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "deploy", "-f", tpl, "--name", "broken-trio", "--set", "failRank=1"); err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	if !Eventually(150*time.Second, func() bool {
		d = nodes[0].ps()["broken-trio"]
		return d.Status.State == "failed"
	}) {
		t.Fatalf("broken-trio is %q (%s); want failed", d.Status.State, d.Status.Reason)
	}
	t.Logf("broken gang failed %v after deploy: %s", time.Since(start), d.Status.Reason)
	if !strings.Contains(d.Status.Reason, "rank 1 refuses to start") {
		t.Errorf("reason %q; want the failing member's last words", d.Status.Reason)
	}
	if !Eventually(20*time.Second, free) {
		for i, n := range nodes {
			t.Logf("node %d (%s) ledger %+v", i, ids[i][:12], n.ledger(t).Reservations)
		}
		t.Fatal("a failed gang still holds members")
	}
	if out, err := exec.Command("pgrep", "-f", wl+" gang").Output(); err == nil && len(out) > 0 {
		t.Errorf("gang processes left: %s", out)
	}
}
