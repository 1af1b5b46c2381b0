package test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A node that leaves the pool gracefully drains first: a slow request in
// flight on its replica, sent through another node's gateway, finishes
// with its answer although `shoal leave` ran while it was being served,
// and the node logs that it drained before it left.
func TestLeaveDrainsRequestsInFlight(t *testing.T) {
	wl := testTool(t, "workload")
	nodes, _ := startPool(t, [][]string{{"--gpu", "RTX 4090:24GiB"}, nil})
	a, b := nodes[0], nodes[1]
	dumpOnFailure(t, nodes)
	tpl := writeTemplate(t, `apiVersion: shoal/v1
kind: Template
metadata:
  name: slow
spec:
  kind: service
  resources:
    gpus: 1
    cpu: 0.1
    memory: 16MiB
  runtime:
    command: [`+wl+`, serve, --delay, 2s]
    port: 8000
    health: /health
    startTimeout: 20s
  scaling:
    minReplicas: 1
    maxReplicas: 1
`)
	b.Shoal("deploy", "-f", tpl, "--name", "slow")
	if !Eventually(30*time.Second, func() bool {
		for _, r := range b.ps()["slow"].Runs {
			if r.State == "ready" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("slow never ready as B sees it: %+v", b.ps()["slow"])
	}
	var st struct {
		Gateway string `json:"gateway"`
	}
	b.JSON(&st, "status")

	type answer struct {
		code int
		body string
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Post("http://"+st.Gateway+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"slow","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			done <- answer{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- answer{code: resp.StatusCode, body: string(body), err: err}
	}()
	// The request is on A's replica when A's ps counts it in flight.
	if !Eventually(10*time.Second, func() bool {
		for _, r := range a.ps()["slow"].Runs {
			if r.InFlight > 0 {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the request never showed in flight on A: %+v", a.ps()["slow"])
	}
	left := time.Now()
	a.Shoal("leave")
	select {
	case got := <-done:
		if got.err != nil || got.code != http.StatusOK || !strings.Contains(got.body, "done after 2s") {
			t.Errorf("request in flight during leave: %d %q, %v; want 200 with the replica's answer", got.code, got.body, got.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the request in flight never ended")
	}
	t.Logf("leave returned after %v", time.Since(left).Round(time.Millisecond))
	if !Eventually(10*time.Second, func() bool {
		log, _ := os.ReadFile(filepath.Join(a.Home, "daemon.log"))
		return strings.Contains(string(log), "msg=drained")
	}) {
		t.Errorf("A's log never says it drained")
	}
}
