package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/dashboard"
	"github.com/shoalmesh/shoal/market"
)

// pool is a fixed pool state that implements every source.
type pool struct {
	self    dashboard.Self
	nodes   []dashboard.Node
	deps    []dashboard.Deployment
	weights dashboard.Weights
}

func (p pool) Self() dashboard.Self                     { return p.self }
func (p pool) Nodes() []dashboard.Node                  { return p.nodes }
func (p pool) Deployments() []dashboard.Deployment      { return p.deps }
func (p pool) Weights() dashboard.Weights               { return p.weights }
func (p pool) withNodes(ns ...dashboard.Node) pool      { p.nodes = ns; return p }
func (p pool) withDeps(ds ...dashboard.Deployment) pool { p.deps = ds; return p }

// credits answers with rep, or err, or blocks until ctx ends when block is
// set; it records the deadline it was given.
type credits struct {
	rep      market.Report
	err      error
	block    bool
	deadline time.Time
}

func (c *credits) Credits(ctx context.Context) (market.Report, error) {
	c.deadline, _ = ctx.Deadline()
	if c.block {
		<-ctx.Done()
		return market.Report{}, ctx.Err()
	}
	return c.rep, c.err
}

const gib = 1 << 30

func testPool() pool {
	return pool{
		self: dashboard.Self{PeerID: "12D3KooWself", Name: "tower", PoolID: "c1703ab6cb3c0c09", Version: "v1"},
		nodes: []dashboard.Node{
			{PeerID: "12D3KooWself", Name: "tower", State: "alive", Self: true, GPUs: []dashboard.GPU{
				{UUID: "GPU-a", Name: "RTX 4090", VRAMTotalBytes: 24 * gib, VRAMUsedBytes: 6 * gib, UtilizationPct: 40, Source: dashboard.SourceMeasured},
			}},
			{PeerID: "12D3KooWlab1", Name: "lab1", State: "alive", GPUs: []dashboard.GPU{
				{UUID: "GPU-b", Name: "RTX 3060", VRAMTotalBytes: 12 * gib, Source: dashboard.SourceDeclared},
				{UUID: "GPU-c", Name: "RTX 3060", VRAMTotalBytes: 12 * gib, Source: dashboard.SourceDeclared},
			}},
			{PeerID: "12D3KooWgone", Name: "gone", State: "dead", GPUs: []dashboard.GPU{
				{UUID: "GPU-d", Name: "A100", VRAMTotalBytes: 80 * gib, VRAMUsedBytes: 80 * gib, Source: dashboard.SourceMeasured},
			}},
		},
		deps: []dashboard.Deployment{{
			Name: "ref", State: "placed", Warmth: "warm", Desired: 1, InFlight: 2,
			Replicas: []dashboard.Replica{{ID: "ref/1-0001", Node: "12D3KooWlab1", NodeName: "lab1", State: "ready", GPUs: []string{"GPU-b"}}},
		}},
		weights: dashboard.Weights{
			Models:    []dashboard.Model{{ID: "bafy1", Name: "tiny", SizeBytes: 1 << 20, Holders: []dashboard.Holder{{PeerID: "12D3KooWlab1", Name: "lab1", State: "complete"}}}},
			Transfers: []dashboard.Transfer{{Node: "12D3KooWself", Model: "tiny", For: "cache"}},
		},
	}
}

// gateway stands for the handler behind the dashboard: it echoes what it
// was asked.
var gateway = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Gateway", "1")
	fmt.Fprintf(w, "%s %s", r.Method, r.URL.RequestURI())
})

func newServer(t *testing.T, cfg dashboard.Config) *httptest.Server {
	t.Helper()
	d, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler(gateway))
	t.Cleanup(srv.Close)
	return srv
}

func configOf(p pool) dashboard.Config {
	return dashboard.Config{Self: p, Nodes: p, Deployments: p, Weights: p}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, url string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func getJSON(t *testing.T, url string, v any, hdr ...string) {
	t.Helper()
	a := get(t, url, hdr...)
	if a.status != http.StatusOK {
		t.Fatalf("GET %s = %d %s; want 200", url, a.status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s Content-Type = %q; want application/json", url, ct)
	}
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, a.body)
	}
}

func TestNodesDeploymentsWeights(t *testing.T) {
	p := testPool()
	srv := newServer(t, configOf(p))

	var nodes []dashboard.Node
	getJSON(t, srv.URL+"/api/dashboard/nodes", &nodes)
	if !reflect.DeepEqual(nodes, p.nodes) {
		t.Errorf("nodes = %+v; want %+v", nodes, p.nodes)
	}
	var deps []dashboard.Deployment
	getJSON(t, srv.URL+"/api/dashboard/deployments", &deps)
	if !reflect.DeepEqual(deps, p.deps) {
		t.Errorf("deployments = %+v; want %+v", deps, p.deps)
	}
	var w dashboard.Weights
	getJSON(t, srv.URL+"/api/dashboard/weights", &w)
	if !reflect.DeepEqual(w, p.weights) {
		t.Errorf("weights = %+v; want %+v", w, p.weights)
	}
}

func TestSummaryCountsAliveMembers(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cfg := configOf(testPool())
	cfg.Now = func() time.Time { return now }
	cfg.Refresh = 1500 * time.Millisecond
	srv := newServer(t, cfg)
	var s dashboard.Summary
	getJSON(t, srv.URL+"/api/dashboard/summary", &s)
	want := dashboard.Summary{
		Self:  testPool().self,
		Alive: 2, Members: 3, GPUs: 3, // the dead member's A100 is not in the pool's capacity
		VRAMTotalBytes: 48 * gib, VRAMUsedBytes: 6 * gib,
		Deployments: 1, RefreshMillis: 1500, Now: now,
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("summary = %+v; want %+v", s, want)
	}
}

// Sources with nothing to say answer empty lists, never null: the page
// iterates them.
func TestEmptySourcesAnswerEmptyLists(t *testing.T) {
	p := pool{self: dashboard.Self{PeerID: "p"}}.withNodes(dashboard.Node{PeerID: "p", State: "alive"}).withDeps(dashboard.Deployment{Name: "d"})
	cases := []struct {
		name string
		cfg  dashboard.Config
		path string
		want string
	}{
		{"nil nodes", dashboard.Config{Self: p, Nodes: pool{}}, "/api/dashboard/nodes", "[]\n"},
		{"node without GPUs", dashboard.Config{Self: p, Nodes: p}, "/api/dashboard/nodes", `"gpus":[]`},
		{"no deployment source", dashboard.Config{Self: p, Nodes: p}, "/api/dashboard/deployments", "[]\n"},
		{"deployment without replicas", dashboard.Config{Self: p, Nodes: p, Deployments: p}, "/api/dashboard/deployments", `"replicas":[]`},
		{"no weight source", dashboard.Config{Self: p, Nodes: p}, "/api/dashboard/weights", `{"models":[],"transfers":[]}`},
	}
	for _, c := range cases {
		srv := newServer(t, c.cfg)
		a := get(t, srv.URL+c.path)
		if a.status != http.StatusOK || !strings.Contains(string(a.body), c.want) {
			t.Errorf("%s: GET %s = %d %s; want 200 containing %s", c.name, c.path, a.status, a.body, c.want)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_test_gauge", Help: "A gauge."}))
	cfg := configOf(testPool())
	cfg.APIKeys = []string{"k1-secret", "k2-secret"}
	cfg.Metrics = reg
	srv := newServer(t, cfg)
	cases := []struct {
		path, auth string
		want       int
	}{
		{"/api/dashboard/nodes", "", http.StatusUnauthorized},
		{"/api/dashboard/nodes", "Bearer wrong", http.StatusUnauthorized},
		{"/api/dashboard/nodes", "k1-secret", http.StatusUnauthorized}, // no scheme
		{"/api/dashboard/nodes", "Basic k1-secret", http.StatusUnauthorized},
		{"/api/dashboard/nodes", "Bearer k1-secret", http.StatusOK},
		{"/api/dashboard/nodes", "bearer  k2-secret ", http.StatusOK},
		{"/api/dashboard/summary", "", http.StatusUnauthorized},
		{"/api/dashboard/deployments", "", http.StatusUnauthorized},
		{"/api/dashboard/weights", "", http.StatusUnauthorized},
		{"/api/dashboard/credits", "", http.StatusUnauthorized},
		{"/api/dashboard/credits", "Bearer k2-secret", http.StatusOK},
		{"/api/dashboard/nope", "", http.StatusUnauthorized},
		{"/api/dashboard/nope", "Bearer k1-secret", http.StatusNotFound},
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer k1-secret", http.StatusOK},
		// The page and its assets hold no pool data: they load without a
		// key and ask for one.
		{"/", "", http.StatusOK},
		{"/dashboard/app.js", "", http.StatusOK},
		{"/dashboard/style.css", "", http.StatusOK},
	}
	for _, c := range cases {
		var hdr []string
		if c.auth != "" {
			hdr = []string{"Authorization", c.auth}
		}
		a := get(t, srv.URL+c.path, hdr...)
		if a.status != c.want {
			t.Errorf("GET %s with Authorization %q = %d %s; want %d", c.path, c.auth, a.status, a.body, c.want)
			continue
		}
		if a.status == http.StatusUnauthorized {
			var e struct{ Error string }
			if err := json.Unmarshal(a.body, &e); err != nil || e.Error == "" {
				t.Errorf("GET %s 401 body = %s; want a JSON error", c.path, a.body)
			}
			if a.header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s 401 has no WWW-Authenticate", c.path)
			}
		}
	}
	var s dashboard.Summary
	getJSON(t, srv.URL+"/api/dashboard/summary", &s, "Authorization", "Bearer k1-secret")
	if !s.Auth {
		t.Errorf("summary.auth = false with keys set; want true")
	}
	if _, err := dashboard.New(dashboard.Config{Self: pool{}, Nodes: pool{}, APIKeys: []string{""}}); !errors.Is(err, dashboard.ErrConfig) {
		t.Errorf("New with an empty key: %v; want ErrConfig", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_test_gauge", Help: "A gauge."})
	g.Set(42)
	reg.MustRegister(g)
	cfg := configOf(testPool())
	cfg.Metrics = reg
	srv := newServer(t, cfg)
	a := get(t, srv.URL+"/metrics")
	if a.status != http.StatusOK || !strings.Contains(string(a.body), "shoal_test_gauge 42") {
		t.Errorf("GET /metrics = %d %s; want 200 with shoal_test_gauge 42", a.status, a.body)
	}
	// Without a registry /metrics is the gateway's to answer.
	srv = newServer(t, configOf(testPool()))
	if a := get(t, srv.URL+"/metrics"); a.header.Get("X-Gateway") != "1" {
		t.Errorf("GET /metrics without a registry = %d %s; want it passed to the next handler", a.status, a.body)
	}
}

func TestCredits(t *testing.T) {
	_, pub, err := crypto.GenerateEd25519Key(rand.New(rand.NewSource(1)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	rep := market.Report{Pool: "c1703ab6cb3c0c09", Root: "abcd", Receipts: 3, Accepted: 3,
		Identities: []market.IdentityReport{{Peer: id, Balance: 1_500_000, Earned: 1_500_000, ServedGPUHours: 0.5, Weight: 1}}}
	cases := []struct {
		name       string
		src        *credits
		available  bool
		reasonPart string
	}{
		{"no source", nil, false, "keeps no market ledger"},
		{"ledger", &credits{rep: rep}, true, ""},
		{"unavailable", &credits{err: fmt.Errorf("%w: no GET /v1/credits", dashboard.ErrUnavailable)}, false, "no GET /v1/credits"},
		{"failing", &credits{err: errors.New("node: boom")}, false, "boom"},
		{"slow", &credits{block: true}, false, "deadline"},
	}
	for _, c := range cases {
		cfg := configOf(testPool())
		cfg.CreditsTimeout = 50 * time.Millisecond
		if c.src != nil {
			cfg.Credits = c.src
		}
		srv := newServer(t, cfg)
		start := time.Now()
		var got dashboard.Credits
		getJSON(t, srv.URL+"/api/dashboard/credits", &got)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: credits took %v; want it bounded by CreditsTimeout", c.name, took)
		}
		if got.Available != c.available || !strings.Contains(got.Reason, c.reasonPart) {
			t.Errorf("%s: credits = %+v; want available %v, reason containing %q", c.name, got, c.available, c.reasonPart)
		}
		if c.available && (got.Report == nil || !reflect.DeepEqual(*got.Report, rep)) {
			t.Errorf("%s: report = %+v; want %+v", c.name, got.Report, rep)
		}
		if c.src != nil && (c.src.deadline.IsZero() || c.src.deadline.Sub(start) > time.Second) {
			t.Errorf("%s: source got deadline %v; want one within CreditsTimeout", c.name, c.src.deadline)
		}
	}
}

// Everything not the dashboard's reaches the gateway as it came: no
// path cleaning, no redirect, any method.
func TestOtherRequestsPassThrough(t *testing.T) {
	srv := newServer(t, configOf(testPool()))
	for _, path := range []string{"/v1/models", "/d/app//a/../b?x=1", "/dashboard", "/api/other", "/metrics"} {
		a := get(t, srv.URL+path)
		if a.header.Get("X-Gateway") != "1" || string(a.body) != "GET "+path {
			t.Errorf("GET %s = %d %q; want the gateway's answer to GET %s", path, a.status, a.body, path)
		}
	}
	resp, err := http.Post(srv.URL+"/", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("X-Gateway") != "1" || string(b) != "POST /" {
		t.Errorf("POST / = %d %q; want the gateway's answer", resp.StatusCode, b)
	}
}

func TestPageAndAssets(t *testing.T) {
	srv := newServer(t, configOf(testPool()))
	page := get(t, srv.URL+"/")
	if page.status != http.StatusOK || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s; want the HTML page", page.status, page.header.Get("Content-Type"))
	}
	csp := page.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("page CSP = %q; want only its own scripts", csp)
	}
	for _, asset := range []struct{ path, ctype string }{
		{"/dashboard/app.js", "javascript"},
		{"/dashboard/style.css", "text/css"},
	} {
		if !strings.Contains(string(page.body), `"`+asset.path+`"`) {
			t.Errorf("page does not load %s", asset.path)
		}
		a := get(t, srv.URL+asset.path)
		if a.status != http.StatusOK || !strings.Contains(a.header.Get("Content-Type"), asset.ctype) || len(a.body) < 100 {
			t.Errorf("GET %s = %d %s (%d bytes); want %s", asset.path, a.status, a.header.Get("Content-Type"), len(a.body), asset.ctype)
		}
	}
	// Nothing in the page may come from elsewhere.
	for _, path := range []string{"/", "/dashboard/app.js", "/dashboard/style.css"} {
		body := string(get(t, srv.URL+path).body)
		for _, bad := range []string{"http://", "https://", "//cdn"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s mentions %q; the dashboard loads nothing from elsewhere", path, bad)
			}
		}
	}
	if a := get(t, srv.URL+"/dashboard/missing.js"); a.status != http.StatusNotFound {
		t.Errorf("GET /dashboard/missing.js = %d; want 404", a.status)
	}
}

func TestConfigRequiresSources(t *testing.T) {
	for _, cfg := range []dashboard.Config{
		{},
		{Self: pool{}},
		{Nodes: pool{}},
		{Self: pool{}, Nodes: pool{}, Refresh: -time.Second},
	} {
		if _, err := dashboard.New(cfg); !errors.Is(err, dashboard.ErrConfig) {
			t.Errorf("New(%+v) = %v; want ErrConfig", cfg, err)
		}
	}
}
