package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
	"github.com/shoalmesh/shoal/runtime/gateway"
	"github.com/shoalmesh/shoal/runtime/gateway/gatewaytest"
)

type harness struct {
	gw  *gateway.Gateway
	url string
	reg *prometheus.Registry
}

// newHarness starts a gateway on cfg behind a loopback HTTP server.
func newHarness(tb testing.TB, cfg gateway.Config) *harness {
	tb.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	gw, err := gateway.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = gw.Close() })
	srv := httptest.NewServer(gw)
	tb.Cleanup(srv.Close)
	return &harness{gw: gw, url: srv.URL, reg: reg}
}

// metric returns the value of the metric name with labels (a counter,
// gauge, or a histogram's sample count); -1 when there is none.
func (h *harness) metric(tb testing.TB, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

func chatBody(model string, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello there"}],"max_tokens":8,"stream":%v}`, model, stream)
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(tb testing.TB, ctx context.Context, method, url, body string, hdr ...string) answer {
	tb.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func post(tb testing.TB, url, body string, hdr ...string) answer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return do(tb, ctx, http.MethodPost, url, body, hdr...)
}

// openAIError decodes an error answer; it fails the test when the body is
// not in OpenAI's format.
func openAIError(tb testing.TB, a answer) (code, typ, msg string) {
	tb.Helper()
	var e struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.body, &e); err != nil || e.Error == nil {
		tb.Fatalf("answer %d %q is not an OpenAI error: %v", a.status, a.body, err)
	}
	return e.Error.Code, e.Error.Type, e.Error.Message
}

func completion(tb testing.TB, a answer) string {
	tb.Helper()
	if a.status != http.StatusOK {
		tb.Fatalf("status %d, body %s; want 200", a.status, a.body)
	}
	var c struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(a.body, &c); err != nil || len(c.Choices) != 1 || c.Choices[0].Message.Content == "" {
		tb.Fatalf("body %s: not a completion (%v)", a.body, err)
	}
	return c.Choices[0].Message.Content
}

// selfID is a peer ID for gateways that need no libp2p host.
const selfID = "12D3KooWGRuwVzNmyhFqFjWMXkeU3PXWgjvV7hDMfAWE6oa6GMqe"

func TestLocalRouting(t *testing.T) {
	dir := gatewaytest.NewDirectory("tiny")
	rep := startReplica(t, "tiny", selfID)
	dir.Set("tiny", rep)
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir})

	direct := completion(t, post(t, rep.Endpoint+"/v1/chat/completions", chatBody("tiny", false)))
	via := completion(t, post(t, h.url+"/v1/chat/completions", chatBody("tiny", false)))
	if via != direct {
		t.Errorf("through the gateway: %q; directly: %q", via, direct)
	}
	// /d/ reaches any path of the workload.
	a := do(t, context.Background(), http.MethodGet, h.url+"/d/tiny/health", "")
	if a.status != http.StatusOK || !bytes.Contains(a.body, []byte(`"model":"tiny"`)) {
		t.Errorf("GET /d/tiny/health = %d %s; want 200 with the model", a.status, a.body)
	}
	if got := h.metric(t, "shoal_gateway_requests_total", map[string]string{"deployment": "tiny", "code": "200"}); got != 2 {
		t.Errorf("requests_total{tiny,200} = %v; want 2", got)
	}
	if got := h.metric(t, "shoal_gateway_time_to_first_byte_seconds", map[string]string{"deployment": "tiny", "route": "local"}); got != 2 {
		t.Errorf("time_to_first_byte samples = %v; want 2", got)
	}
}

func TestModelsAndUnknownModel(t *testing.T) {
	dir := gatewaytest.NewDirectory("alpha", "beta")
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir})

	a := do(t, context.Background(), http.MethodGet, h.url+"/v1/models", "")
	var list struct {
		Object string
		Data   []struct{ ID, Object string }
	}
	if err := json.Unmarshal(a.body, &list); err != nil || a.status != 200 || len(list.Data) != 2 ||
		list.Data[0].ID != "alpha" || list.Data[1].ID != "beta" || list.Object != "list" {
		t.Errorf("GET /v1/models = %d %s; want alpha and beta (both scaled to zero)", a.status, a.body)
	}
	a = post(t, h.url+"/v1/chat/completions", chatBody("gamma", false))
	code, typ, msg := openAIError(t, a)
	if a.status != http.StatusNotFound || code != "model_not_found" || typ != "invalid_request_error" ||
		!strings.Contains(msg, "alpha, beta") {
		t.Errorf("unknown model = %d %s/%s %q; want 404 model_not_found listing alpha, beta", a.status, typ, code, msg)
	}
	a = do(t, context.Background(), http.MethodGet, h.url+"/d/gamma/x", "")
	if code, _, _ := openAIError(t, a); a.status != http.StatusNotFound || code != "model_not_found" {
		t.Errorf("GET /d/gamma/x = %d %s; want 404 model_not_found", a.status, code)
	}
	if got := h.metric(t, "shoal_gateway_requests_total", map[string]string{"deployment": "", "code": "404"}); got != 2 {
		t.Errorf("requests_total{\"\",404} = %v; want 2 (unknown names never become labels)", got)
	}
}

func TestBadInput(t *testing.T) {
	dir := gatewaytest.NewDirectory("tiny")
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir, MaxBodyBytes: 1024})
	for _, c := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"not JSON", "POST", "/v1/chat/completions", "hello", 400, "invalid_request"},
		{"array", "POST", "/v1/completions", `["model"]`, 400, "invalid_request"},
		{"no model", "POST", "/v1/embeddings", `{"input":"x"}`, 400, "invalid_request"},
		{"model not a string", "POST", "/v1/chat/completions", `{"model":7}`, 400, "invalid_request"},
		{"empty model", "POST", "/v1/chat/completions", `{"model":""}`, 400, "invalid_request"},
		{"too large", "POST", "/v1/chat/completions", `{"model":"tiny","x":"` + strings.Repeat("a", 2000) + `"}`, 413, "request_too_large"},
		{"wrong method", "GET", "/v1/chat/completions", "", 405, "method_not_allowed"},
		{"no route", "GET", "/v2/whatever", "", 404, "not_found"},
		{"no deployment", "GET", "/d/", "", 400, "invalid_request"},
	} {
		a := do(t, context.Background(), c.method, h.url+c.path, c.body)
		code, _, _ := openAIError(t, a)
		if a.status != c.status || code != c.code {
			t.Errorf("%s: %s %s = %d %s; want %d %s", c.name, c.method, c.path, a.status, code, c.status, c.code)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	dir := gatewaytest.NewDirectory("tiny")
	dir.Set("tiny", startReplica(t, "tiny", selfID))
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir, APIKeys: []string{"k1-secret", "k2-secret"}})
	for _, c := range []struct {
		auth   string
		status int
	}{
		{"", 401},
		{"Bearer wrong", 401},
		{"Basic k1-secret", 401},
		{"Bearer k1-secret", 200},
		{"bearer k2-secret", 200},
	} {
		a := post(t, h.url+"/v1/chat/completions", chatBody("tiny", false), "Authorization", c.auth)
		if a.status != c.status {
			t.Errorf("Authorization %q = %d %s; want %d", c.auth, a.status, a.body, c.status)
		}
		if c.status == 401 {
			if code, typ, _ := openAIError(t, a); code != "invalid_api_key" || typ != "authentication_error" {
				t.Errorf("Authorization %q: error %s/%s; want authentication_error/invalid_api_key", c.auth, typ, code)
			}
		}
	}
	if a := do(t, context.Background(), http.MethodGet, h.url+"/v1/models", ""); a.status != 401 {
		t.Errorf("GET /v1/models without a key = %d; want 401", a.status)
	}
}

func TestScaleFromZero(t *testing.T) {
	dir := gatewaytest.NewDirectory("tiny")
	asked := make(chan string, 10)
	scaler := &gatewaytest.Scaler{OnScaleUp: func(_ context.Context, dep string) error {
		asked <- dep
		return nil
	}}
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir, Scaler: scaler, QueueTimeout: 30 * time.Second})

	got := make(chan answer, 3)
	for range 3 {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(chatBody("tiny", false)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				got <- answer{status: -1, body: []byte(err.Error())}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got <- answer{status: resp.StatusCode, body: b}
		}()
	}
	select {
	case dep := <-asked:
		if dep != "tiny" {
			t.Fatalf("ScaleUp(%q); want tiny", dep)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ScaleUp within 10 s")
	}
	if !meshtest.Eventually(10*time.Second, func() bool { return h.gw.Waiting("tiny") == 3 }) {
		t.Fatalf("Waiting(tiny) = %d; want 3", h.gw.Waiting("tiny"))
	}
	if d := h.metric(t, "shoal_gateway_queue_depth", map[string]string{"deployment": "tiny"}); d != 3 {
		t.Errorf("queue_depth = %v; want 3", d)
	}
	// The coordinator's part: a replica starts and turns ready.
	dir.Set("tiny", startReplica(t, "tiny", selfID))
	t.Cleanup(func() { _ = h.gw.Close() }) // before the replica stops: no idle connections left to it
	for range 3 {
		select {
		case a := <-got:
			completion(t, a)
		case <-time.After(10 * time.Second):
			t.Fatal("a waiting request was not answered within 10 s of the replica turning ready")
		}
	}
	if n := len(scaler.Calls()); n != 1 {
		t.Errorf("ScaleUp called %d times; want 1 for one wave of waiting requests", n)
	}
	if c := h.metric(t, "shoal_gateway_cold_starts_total", map[string]string{"deployment": "tiny"}); c != 1 {
		t.Errorf("cold_starts_total = %v; want 1", c)
	}
	if d := h.metric(t, "shoal_gateway_queue_depth", map[string]string{"deployment": "tiny"}); d != 0 {
		t.Errorf("queue_depth after = %v; want 0", d)
	}
}

func TestQueueFull(t *testing.T) {
	dir := gatewaytest.NewDirectory("tiny")
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir, QueueSize: 1, QueueTimeout: time.Minute, Scaler: &gatewaytest.Scaler{}})
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(chatBody("tiny", false)))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	if !meshtest.Eventually(10*time.Second, func() bool { return h.gw.Waiting("tiny") == 1 }) {
		t.Fatal("the first request never waited")
	}
	a := post(t, h.url+"/v1/chat/completions", chatBody("tiny", false))
	code, typ, _ := openAIError(t, a)
	if a.status != http.StatusTooManyRequests || code != "queue_full" || typ != "rate_limit_error" || a.header.Get("Retry-After") != "1" {
		t.Errorf("second request = %d %s/%s Retry-After %q; want 429 rate_limit_error/queue_full Retry-After 1",
			a.status, typ, code, a.header.Get("Retry-After"))
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("first request: %v; want canceled", err)
	}
	if !meshtest.Eventually(5*time.Second, func() bool { return h.gw.Waiting("tiny") == 0 }) {
		t.Error("a client that left still waits")
	}
}

func TestQueueDeadline(t *testing.T) {
	dir := gatewaytest.NewDirectory("tiny")
	scaler := &gatewaytest.Scaler{OnScaleUp: func(context.Context, string) error { return errors.New("no capacity") }}
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir, Scaler: scaler,
		QueueTimeout: 300 * time.Millisecond, RetryAfterCold: 7 * time.Second})
	start := time.Now()
	a := post(t, h.url+"/v1/chat/completions", chatBody("tiny", false))
	code, _, msg := openAIError(t, a)
	if a.status != http.StatusServiceUnavailable || code != "no_replica_ready" || a.header.Get("Retry-After") != "7" {
		t.Errorf("request = %d %s Retry-After %q; want 503 no_replica_ready Retry-After 7", a.status, code, a.header.Get("Retry-After"))
	}
	if !strings.Contains(msg, "no capacity") {
		t.Errorf("message %q does not say why the scale up failed", msg)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 10*time.Second {
		t.Errorf("answered after %v; want about the queue timeout", el)
	}
	if n := len(scaler.Calls()); n != 1 {
		t.Errorf("ScaleUp calls = %d; want 1", n)
	}
}

// TestReport steps a fake clock and checks the concurrency samples.
func TestReport(t *testing.T) {
	dir := gatewaytest.NewDirectory("tiny")
	dir.Set("tiny", startReplica(t, "tiny", selfID))
	clock := gatewaytest.NewClock(time.Unix(1000, 0))
	rep := &gatewaytest.Reporter{}
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir, Reporter: rep, Clock: clock})

	completion(t, post(t, h.url+"/v1/chat/completions", chatBody("tiny", false)))
	completion(t, post(t, h.url+"/v1/chat/completions", chatBody("tiny", false)))
	clock.Advance(time.Second)
	h.gw.Tick(clock.Now())
	clock.Advance(time.Second)
	h.gw.Tick(clock.Now())
	clock.Advance(time.Second)
	h.gw.Tick(clock.Now())
	got := rep.Reports()
	if len(got) != 2 {
		t.Fatalf("reports = %+v; want 2 (traffic, then one zero, then silence)", got)
	}
	if s := got[0].Sample; got[0].Deployment != "tiny" || s.Requests != 2 || s.Waiting != 0 || s.Interval != time.Second {
		t.Errorf("first report = %+v; want tiny with 2 requests over 1 s", got[0])
	}
	if s := got[1].Sample; s.Requests != 0 || s.Concurrency != 0 {
		t.Errorf("second report = %+v; want zero", got[1])
	}
	if r := h.metric(t, "shoal_gateway_ready_replicas", map[string]string{"deployment": "tiny", "location": "local"}); r != 1 {
		t.Errorf("ready_replicas{tiny,local} = %v; want 1", r)
	}
}

func TestDeploymentPathRewrite(t *testing.T) {
	var seen atomic.Value
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Method + " " + r.URL.RequestURI() + " dep=" + r.Header.Get("Shoal-Deployment") + " xff=" + r.Header.Get("X-Forwarded-For"))
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	dir := gatewaytest.NewDirectory("web")
	dir.Set("web", gateway.Replica{ID: "w1", Deployment: "web", Node: selfID, Endpoint: app.URL})
	h := newHarness(t, gateway.Config{Self: selfID, Directory: dir})
	for _, c := range []struct{ path, want string }{
		{"/d/web/a/b%2Fc?q=1", "PUT /a/b%2Fc?q=1 dep= xff=127.0.0.1"},
		{"/d/web", "PUT / dep= xff=127.0.0.1"},
	} {
		a := do(t, context.Background(), http.MethodPut, h.url+c.path, "body", "Shoal-Deployment", "evil")
		if a.status != 200 || seen.Load() != c.want {
			t.Errorf("PUT %s reached the app as %q (status %d); want %q", c.path, seen.Load(), a.status, c.want)
		}
	}
}

// crossNode is two mesh nodes of one pool with a gateway each; A has no
// replicas, B runs them.
type crossNode struct {
	nodes []*mesh.Node
	dir   *gatewaytest.Directory
	a, b  *harness
}

func newCrossNode(tb testing.TB) *crossNode {
	tb.Helper()
	nodes := meshtest.Pool(tb, 2, meshtest.Fast)
	dir := gatewaytest.NewDirectory()
	c := &crossNode{nodes: nodes, dir: dir}
	c.b = newHarness(tb, gateway.Config{Self: nodes[1].ID(), Directory: dir, Streams: nodes[1], Server: nodes[1]})
	c.a = newHarness(tb, gateway.Config{Self: nodes[0].ID(), Directory: dir, Streams: nodes[0], Server: nodes[0]})
	return c
}

func TestCrossNode(t *testing.T) {
	c := newCrossNode(t)
	rep := startReplica(t, "tiny", c.nodes[1].ID())
	c.dir.Set("tiny", rep)

	direct := completion(t, post(t, rep.Endpoint+"/v1/chat/completions", chatBody("tiny", false)))
	for i := range 3 { // the second and third reuse the stream
		if via := completion(t, post(t, c.a.url+"/v1/chat/completions", chatBody("tiny", false))); via != direct {
			t.Errorf("request %d through node A: %q; directly: %q", i, via, direct)
		}
	}
	// Streaming through both gateways.
	a := post(t, c.a.url+"/v1/chat/completions", chatBody("tiny", true))
	if a.status != 200 || a.header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream = %d %q; want 200 text/event-stream", a.status, a.header.Get("Content-Type"))
	}
	var words []string
	for _, ev := range strings.Split(strings.TrimSpace(string(a.body)), "\n\n") {
		data := strings.TrimPrefix(ev, "data: ")
		if data == "[DONE]" {
			continue
		}
		var ch struct {
			Choices []struct{ Delta struct{ Content string } } `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		words = append(words, ch.Choices[0].Delta.Content)
	}
	if got := strings.Join(words, ""); got != direct {
		t.Errorf("streamed %q; want %q", got, direct)
	}
	if n := c.a.metric(t, "shoal_gateway_time_to_first_byte_seconds", map[string]string{"route": "remote"}); n != 4 {
		t.Errorf("node A remote ttfb samples = %v; want 4", n)
	}
	if n := c.b.metric(t, "shoal_gateway_time_to_first_byte_seconds", map[string]string{"route": "forwarded"}); n != 4 {
		t.Errorf("node B forwarded ttfb samples = %v; want 4", n)
	}
}

// TestCrossNodeSSEChunkByChunk proves that events are not held back: the
// replica writes the next event only after the client has read the last.
func TestCrossNodeSSEChunkByChunk(t *testing.T) {
	const events = 5
	next := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-time.After(10 * time.Second):
				return
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer app.Close()
	c := newCrossNode(t)
	c.dir.Set("sse", gateway.Replica{ID: "s1", Deployment: "sse", Node: c.nodes[1].ID(), Endpoint: app.URL})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.a.url+"/v1/chat/completions", strings.NewReader(chatBody("sse", true)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range events {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v (held back by a gateway?)", i, err)
		}
		if want := fmt.Sprintf("data: %d\n", i); line != want {
			t.Fatalf("event %d = %q; want %q", i, line, want)
		}
		_, _ = br.ReadString('\n') // the blank line
		next <- struct{}{}
	}
}

// TestForwardOnlyToLocalReplicas: a member that speaks the protocol
// directly cannot make a gateway proxy anywhere but to its own replicas.
func TestForwardOnlyToLocalReplicas(t *testing.T) {
	var trapped atomic.Int64
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { trapped.Add(1) }))
	defer trap.Close()
	c := newCrossNode(t)
	// Listed on node B with an endpoint: node A must not use it.
	c.dir.Set("tiny", gateway.Replica{ID: "b1", Deployment: "tiny", Node: c.nodes[1].ID(), Endpoint: trap.URL})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, hdr := range []map[string]string{
		{"Shoal-Deployment": "tiny", "Shoal-Replica": "b1"},
		{"Shoal-Deployment": "tiny"},
		{"Shoal-Deployment": "nope"},
		{},
	} {
		s, err := c.nodes[1].OpenStream(ctx, c.nodes[0].ID(), gateway.ProtocolID)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+trap.Listener.Addr().String()+"/x", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if err := req.Write(s); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(s), req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("forwarded request with %v = %d %s; want 503", hdr, resp.StatusCode, b)
		}
	}
	if n := trapped.Load(); n != 0 {
		t.Errorf("the trap endpoint was reached %d times; want never", n)
	}
}

func TestOutsiderCannotUseProtocol(t *testing.T) {
	c := newCrossNode(t)
	other, _ := mesh.NewPool()
	out := meshtest.Start(t, meshtest.Config(t, other, "outsider"))
	out.Host().Peerstore().AddAddrs(c.nodes[0].ID(), c.nodes[0].Addrs(), time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := out.OpenStream(ctx, c.nodes[0].ID(), gateway.ProtocolID); !errors.Is(err, mesh.ErrNotMember) {
		t.Errorf("outsider OpenStream = %v; want ErrNotMember", err)
	}
	raw, err := out.Host().NewStream(ctx, c.nodes[0].ID(), gateway.ProtocolID)
	if err != nil {
		return // refused outright
	}
	defer raw.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://x/v1/models", nil)
	req.Header.Set("Shoal-Deployment", "tiny")
	_ = req.Write(raw)
	_ = raw.CloseWrite()
	if b, _ := io.ReadAll(raw); len(b) > 0 {
		t.Errorf("outsider read %q over the raw host; want nothing", b)
	}
}

// TestNoGoroutineGrowth: warm cross-node requests reuse streams and leave
// no goroutines behind.
func TestNoGoroutineGrowth(t *testing.T) {
	c := newCrossNode(t)
	c.dir.Set("tiny", startReplica(t, "tiny", c.nodes[1].ID()))
	stream := chatBody("tiny", true)
	for range 10 {
		completion(t, post(t, c.a.url+"/v1/chat/completions", chatBody("tiny", false)))
		post(t, c.a.url+"/v1/chat/completions", stream)
	}
	before := goruntime.NumGoroutine()
	for range 100 {
		completion(t, post(t, c.a.url+"/v1/chat/completions", chatBody("tiny", false)))
		if a := post(t, c.a.url+"/v1/chat/completions", stream); a.status != 200 {
			t.Fatalf("stream = %d", a.status)
		}
	}
	var now int
	if !meshtest.Eventually(5*time.Second, func() bool { now = goruntime.NumGoroutine(); return now <= before+10 }) {
		t.Errorf("goroutines %d after 200 more requests; %d before", now, before)
	}
}

// TestUnreachableNodeIsSkipped: a replica listed on a node no stream
// reaches (it died and the pool has not noticed yet) answers nothing; the
// request is sent again elsewhere, here after waiting in the queue until
// the Directory lists a replica on a live node, and the node is skipped by
// the requests that follow. A request whose body cannot be sent again
// fails cleanly instead.
func TestUnreachableNodeIsSkipped(t *testing.T) {
	c := newCrossNode(t)
	ghost := meshtest.Pool(t, 1, meshtest.Fast)[0] // never joins: no stream reaches it
	c.dir.Set("tiny", gateway.Replica{ID: "tiny-ghost", Deployment: "tiny", Node: ghost.ID()})

	got := make(chan answer, 2)
	for range 2 {
		go func() { got <- post(t, c.a.url+"/v1/chat/completions", chatBody("tiny", false)) }()
	}
	if !meshtest.Eventually(10*time.Second, func() bool { return c.a.gw.Waiting("tiny") == 2 }) {
		t.Fatalf("requests to an unreachable replica do not wait for another: Waiting(tiny) = %d", c.a.gw.Waiting("tiny"))
	}
	c.dir.Set("tiny", startReplica(t, "tiny", c.nodes[1].ID()))
	for range 2 {
		select {
		case a := <-got:
			completion(t, a)
		case <-time.After(10 * time.Second):
			t.Fatal("a waiting request was not answered once a reachable replica was listed")
		}
	}

	// A /d/ upload streams its body: it cannot be sent again.
	ghost2 := meshtest.Pool(t, 1, meshtest.Fast)[0]
	c.dir.Set("tiny", gateway.Replica{ID: "tiny-ghost2", Deployment: "tiny", Node: ghost2.ID()})
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write([]byte("data")); _ = pw.Close() }()
	resp, err := http.Post(c.a.url+"/d/tiny/upload", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("streamed upload to an unreachable replica = %d; want 503", resp.StatusCode)
	}
}

// A node that says it holds no such replica (its directory is ahead of
// ours) is not the end of a request that can be sent again: it waits for
// another replica.
func TestGoneReplicaIsSkipped(t *testing.T) {
	c := newCrossNode(t)
	// Listed on B without an endpoint: B answers that it holds no such replica.
	c.dir.Set("tiny", gateway.Replica{ID: "tiny-stale", Deployment: "tiny", Node: c.nodes[1].ID()})
	got := make(chan answer, 1)
	go func() { got <- post(t, c.a.url+"/v1/chat/completions", chatBody("tiny", false)) }()
	if !meshtest.Eventually(10*time.Second, func() bool { return c.a.gw.Waiting("tiny") == 1 }) {
		select {
		case a := <-got:
			t.Fatalf("request to a gone replica answered %d %s; want it to wait for another", a.status, a.body)
		default:
		}
		t.Fatalf("request to a gone replica does not wait for another: Waiting(tiny) = %d", c.a.gw.Waiting("tiny"))
	}
	c.dir.Set("tiny", gateway.Replica{ID: "tiny-stale", Deployment: "tiny", Node: c.nodes[1].ID()}, startReplica(t, "tiny", c.nodes[1].ID()))
	select {
	case a := <-got:
		completion(t, a)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request was not answered once a live replica was listed")
	}
}

// A stream that breaks before the answer (the node died, or the network
// under it) sends the request elsewhere.
func TestBrokenStreamIsRetried(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	dir := gatewaytest.NewDirectory()
	newHarness(t, gateway.Config{Self: nodes[1].ID(), Directory: dir, Streams: nodes[1], Server: nodes[1]})
	a := newHarness(t, gateway.Config{Self: nodes[0].ID(), Directory: dir, Streams: nodes[0], Server: nodes[0]})
	var broken atomic.Int64
	nodes[2].Handle(gateway.ProtocolID, func(s network.Stream) {
		if _, err := http.ReadRequest(bufio.NewReader(s)); err == nil {
			broken.Add(1)
		}
		_ = s.Reset()
	})
	brokenRep := gateway.Replica{ID: "tiny-broken", Deployment: "tiny", Node: nodes[2].ID()}
	dir.Set("tiny", brokenRep)
	got := make(chan answer, 1)
	go func() { got <- post(t, a.url+"/v1/chat/completions", chatBody("tiny", false)) }()
	if !meshtest.Eventually(10*time.Second, func() bool { return broken.Load() >= 1 && a.gw.Waiting("tiny") == 1 }) {
		select {
		case r := <-got:
			t.Fatalf("request over a breaking stream answered %d %s; want it to wait for another replica", r.status, r.body)
		default:
		}
		t.Fatalf("request over a breaking stream does not wait: reached %d times, Waiting(tiny) = %d", broken.Load(), a.gw.Waiting("tiny"))
	}
	dir.Set("tiny", brokenRep, startReplica(t, "tiny", nodes[1].ID()))
	select {
	case r := <-got:
		completion(t, r)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request was not answered once a working replica was listed")
	}
}
