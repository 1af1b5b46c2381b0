package test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Six clients keep slow requests (1.5 s each) in flight against a service
// with targetConcurrency 1 and maxReplicas 3: its coordinator, fed the
// in-flight counts of every node's serving reports, raises it from one
// replica to three; once the load stops it goes back to one after its
// 6 s window.
func TestAutoscaleUpAndDown(t *testing.T) {
	wl := testTool(t, "workload")
	nodes, _ := startPool(t, [][]string{nil, nil})
	dumpOnFailure(t, nodes)
	tpl := writeTemplate(t, `apiVersion: shoal/v1
kind: Template
metadata:
  name: slow
spec:
  kind: service
  resources:
    cpu: 0.1
    memory: 16MiB
  runtime:
    command: [`+wl+`, serve, --delay, 1500ms]
    port: 8000
    health: /health
    startTimeout: 20s
  scaling:
    minReplicas: 1
    maxReplicas: 3
    targetConcurrency: 1
    window: 6s
`)
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "deploy", "-f", tpl, "--name", "slow"); err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	ready := func() int {
		n := 0
		for _, r := range nodes[0].ps()["slow"].Runs {
			if r.State == "ready" {
				n++
			}
		}
		return n
	}
	if !Eventually(30*time.Second, func() bool { return ready() == 1 }) {
		t.Fatalf("slow never has its one replica ready")
	}
	var st struct {
		Gateway string `json:"gateway"`
	}
	nodes[1].JSON(&st, "status")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+st.Gateway+"/v1/chat/completions",
					strings.NewReader(`{"model":"slow","messages":[{"role":"user","content":"hi"}]}`))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "done after") {
					ok.Add(1)
				} else if ctx.Err() == nil {
					bad.Add(1)
				}
			}
		}()
	}
	loadAt := time.Now()
	up := Eventually(45*time.Second, func() bool { return ready() == 3 })
	upAfter := time.Since(loadAt)
	// Keep the load a little longer: the three replicas answer it.
	served := Eventually(20*time.Second, func() bool { return ok.Load() >= 12 })
	cancel()
	wg.Wait()
	if !up {
		t.Fatalf("under load slow has %d ready replicas after %v; want 3", ready(), upAfter)
	}
	t.Logf("1 → 3 replicas %v after the load began; %d answered, %d errors", upAfter, ok.Load(), bad.Load())
	if !served {
		t.Errorf("only %d requests answered under load", ok.Load())
	}
	if bad.Load() > 0 {
		t.Errorf("%d requests failed while scaling up", bad.Load())
	}
	if d := nodes[0].ps()["slow"]; d.Status.State != "placed" {
		t.Errorf("slow is %q; want placed", d.Status.State)
	}
	stopAt := time.Now()
	if !Eventually(45*time.Second, func() bool { return ready() == 1 && len(nodes[0].ps()["slow"].Runs) == 1 }) {
		t.Fatalf("after the load stopped slow still has %d ready replicas", ready())
	}
	t.Logf("3 → 1 replica %v after the load stopped (window 6 s)", time.Since(stopAt))
}
