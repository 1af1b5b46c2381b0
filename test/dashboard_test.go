package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvChromium names the Chromium (or Chrome) binary the browser test
// drives; unset, it looks for chromium, chromium-browser, google-chrome
// and headless-shell in PATH.
const EnvChromium = "SHOAL_CHROMIUM"

// EnvOutput is the directory the browser test writes its screenshot to;
// default test/output (ignored by git).
const EnvOutput = "SHOAL_TEST_OUTPUT"

func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skipf("no Chromium binary in PATH (apt-get install chromium, or set %s): browser test skipped", EnvChromium)
	return ""
}

// outputDir is where tests leave artefacts for people to look at.
func outputDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(EnvOutput)
	if dir == "" {
		dir = "output"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// waitJS evaluates expr (a boolean JavaScript expression) in the page
// every 100 ms until it is true or d passes.
func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("dashboard never showed %s within %v (last error %v); page text:\n%s", what, d, last, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The scenario: a three-node pool with a declared GPU each, the
// dashboard of one node open in headless Chromium; it lists every node
// and GPU, then a deployment with its replica's state as it starts, the
// model it uses and who holds it; the page is saved as a screenshot.
func TestDashboardInBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	ref := referenceBinary(t)
	start := time.Now()

	_, imp := referenceModel(t, ref, "tiny")

	nodes, ids := startPool(t, [][]string{
		{"--name", "tower", "--gpu", "RTX 4090:24GiB:16384"},
		{"--name", "lab1", "--gpu", "RTX 3060:12GiB:3584", "--gpu", "RTX 3060:12GiB:3584"},
		{"--name", "edge", "--gpu", "A100 80GB:80GiB:6912"},
	})
	var st struct {
		Gateway string `json:"gateway"`
	}
	nodes[0].JSON(&st, "status")
	if st.Gateway == "" {
		t.Fatal("status names no gateway")
	}
	base := "http://" + st.Gateway
	t.Logf("pool of 3 up in %v; dashboard at %s/", time.Since(start), base)

	// /metrics on the gateway listener: GPU telemetry per card besides the
	// mesh's and gateway's series.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`shoal_node_gpu_vram_total_bytes{`, `name="RTX 4090",source="declared"} 2.5769803776e+10`, `shoal_mesh_`} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s/metrics = %d, lacks %s", base, resp.StatusCode, want)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	opened := time.Now()
	if err := chromedp.Do(bctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("open %s/ in Chromium (%s): %v", base, chrome, err)
	}
	t.Logf("Chromium started and loaded the page in %v", time.Since(opened))
	opened = time.Now()

	// Every node, each with its declared GPUs.
	var conds []string
	for i, id := range ids {
		gpus := 1
		if i == 1 {
			gpus = 2
		}
		conds = append(conds, fmt.Sprintf(
			`document.querySelectorAll('#nodes tr[data-peer=%q] .gpu[data-source="declared"]').length === %d`, id, gpus))
	}
	waitJS(t, bctx, 30*time.Second, "three nodes with their declared GPUs", strings.Join(conds, " && "))
	t.Logf("nodes and GPUs listed %v after the page loaded", time.Since(opened))
	waitJS(t, bctx, 10*time.Second, "the market ledger section answered",
		`document.querySelector('#credits [data-available]') !== null`)

	// A model and a deployment of it with one replica.
	if _, stderr, err := Run(t, "--home", nodes[0].Home, "weights", "add", imp, "--name", "tiny"); err != nil {
		t.Fatalf("weights add: %v\n%s", err, stderr)
	}
	tpl := filepath.Join(t.TempDir(), "ref.yaml")
	if err := os.WriteFile(tpl, []byte(serveTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	deployed := time.Now()
	if _, stderr, err := Run(t, "--home", nodes[2].Home, "deploy", "-f", tpl, "--set", "model=tiny", "--name", "ref", "--replicas", "1"); err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	waitJS(t, bctx, 30*time.Second, "deployment ref with a replica state",
		`(() => { const s = document.querySelector('#deployments tr.replica[data-deployment="ref"] td[data-field="state"]');
		          return s !== null && ['placed', 'starting', 'ready'].includes(s.textContent); })()`)
	t.Logf("deployment and its replica shown %v after deploy", time.Since(deployed))
	waitJS(t, bctx, 30*time.Second, "replica of ref ready and the deployment warm",
		`document.querySelector('#deployments tr.replica[data-deployment="ref"] td[data-field="state"]')?.textContent === 'ready' &&
		 document.querySelector('#deployments tr.deployment[data-deployment="ref"] .badge.warm') !== null`)
	t.Logf("replica ready on the dashboard %v after deploy", time.Since(deployed))
	chat(t, base)
	waitJS(t, bctx, 30*time.Second, "model tiny and who holds it",
		`[...document.querySelectorAll('#models tbody tr')].some(r => r.cells[0].textContent === 'tiny' && Number(r.dataset.holders) >= 1)`)

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(outputDir(t), "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the dashboard (%d KiB) in %s; whole test %v", len(shot)>>10, path, time.Since(start))
}
