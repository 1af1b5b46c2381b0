package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Gateway routes HTTP requests to replicas of the pool. It is an
// http.Handler for clients; with Config.Server set it also serves
// ProtocolID to other nodes' gateways. Safe for concurrent use.
type Gateway struct {
	cfg  Config
	m    *metrics
	keys KeyRing

	localT, remoteT *http.Transport
	local, remote   *httputil.ReverseProxy // remote nil without Config.Streams

	lmu   sync.Mutex
	loads map[replicaKey]int // requests this gateway has in flight per replica
	// unreachable: nodes a stream could not be opened to, until when. Their
	// replicas are skipped meanwhile, so requests wait in the queue for
	// another replica instead of failing one after another while the pool
	// has not yet noticed the node is gone.
	unreachable map[peer.ID]time.Time
	rnd         *rand.Rand

	mu   sync.Mutex
	deps map[string]*depState // deployments that saw requests here

	ln        *streamListener // nil without Config.Server
	srv       *http.Server
	served    chan struct{} // closed when srv.Serve returns
	closeOnce sync.Once
}

type replicaKey struct {
	node peer.ID
	id   string
}

// target is where one request goes; the proxies' Rewrite reads it from the
// request's context.
type target struct {
	rep           Replica
	endpoint      *url.URL // local replicas
	path, rawPath string
	// retry: when no stream reaches the replica's node, or the stream
	// breaks before an answer, answer nothing and set unreachable; when
	// the node says the replica is gone, answer nothing and set gone. The
	// request is then sent elsewhere.
	retry, unreachable, gone bool
}

// errReplicaGone: the replica's node answered that it holds no such replica.
var errReplicaGone = errors.New("gateway: the replica's node holds no such replica")

type targetKey struct{}

// New returns a gateway. With Config.Server set it starts serving
// ProtocolID; Close stops that.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg:         cfg,
		m:           m,
		loads:       map[replicaKey]int{},
		unreachable: map[peer.ID]time.Time{},
		rnd:         rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		deps:        map[string]*depState{},
		keys:        NewKeyRing(cfg.APIKeys),
	}
	errLog := slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	bufs := &bufferPool{}
	g.localT = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: cfg.MaxIdlePerPeer,
		IdleConnTimeout:     cfg.IdleConnTimeout,
		DisableCompression:  true, // a proxy passes encodings through
	}
	g.local = &httputil.ReverseProxy{
		Rewrite:      g.rewriteLocal,
		Transport:    g.localT,
		ErrorHandler: g.proxyError,
		BufferPool:   bufs,
		ErrorLog:     errLog,
	}
	if cfg.Streams != nil {
		g.remoteT = &http.Transport{
			DialContext:         dialPeer(cfg.Streams),
			MaxIdleConnsPerHost: cfg.MaxIdlePerPeer,
			IdleConnTimeout:     cfg.IdleConnTimeout,
			DisableCompression:  true,
		}
		g.remote = &httputil.ReverseProxy{
			Rewrite:        g.rewriteRemote,
			ModifyResponse: g.remoteAnswer,
			Transport:      g.remoteT,
			ErrorHandler:   g.proxyError,
			BufferPool:     bufs,
			ErrorLog:       errLog,
		}
	}
	if cfg.Server != nil {
		g.ln = newStreamListener(cfg.Self)
		g.srv = &http.Server{
			Handler:           http.HandlerFunc(g.serveForwarded),
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       cfg.IdleConnTimeout,
			ErrorLog:          errLog,
		}
		g.served = make(chan struct{})
		go func() {
			defer close(g.served)
			_ = g.srv.Serve(g.ln)
		}()
		cfg.Server.Handle(ProtocolID, g.ln.handle)
	}
	return g, nil
}

// Close stops serving ProtocolID (in-flight forwarded requests get 5 s to
// finish) and drops idle connections. Client requests are the owning
// http.Server's to stop.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		if g.srv != nil {
			g.cfg.Server.RemoveHandler(ProtocolID)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := g.srv.Shutdown(ctx); err != nil {
				_ = g.srv.Close()
			}
			cancel()
			<-g.served
		}
		g.localT.CloseIdleConnections()
		if g.remoteT != nil {
			g.remoteT.CloseIdleConnections()
		}
	})
	return nil
}

// Waiting returns how many requests wait here for a replica of deployment.
func (g *Gateway) Waiting(deployment string) int {
	g.mu.Lock()
	st := g.deps[deployment]
	g.mu.Unlock()
	if st == nil {
		return 0
	}
	return st.queued()
}

// LocalLoads returns the requests this gateway has in flight on each
// replica of this node, by replica ID (forwarded ones included): the
// in-flight count the node reports to the pool for its autoscalers.
func (g *Gateway) LocalLoads() map[string]int {
	g.lmu.Lock()
	defer g.lmu.Unlock()
	out := map[string]int{}
	for k, n := range g.loads {
		if k.node == g.cfg.Self && n > 0 {
			out[k.id] += n
		}
	}
	return out
}

func (g *Gateway) state(dep string) *depState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.deps[dep]
	if st == nil {
		st = newDepState(g.cfg.Clock.Now())
		g.deps[dep] = st
	}
	return st
}

// ServeHTTP answers a client.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	defer func() {
		if !rec.counted {
			g.done(rec, "", "", start)
		}
	}()
	// Only gateways speak these, and only over libp2p.
	r.Header.Del(hdrDeployment)
	r.Header.Del(hdrReplica)
	if len(g.keys) > 0 {
		if !g.keys.Allows(r) {
			g.fail(rec, "", ErrUnauthorized)
			return
		}
		r.Header.Del("Authorization") // the pool's key is not the workload's business
	}
	p := r.URL.Path
	switch {
	case p == "/v1/models" || strings.HasPrefix(p, "/v1/models/"):
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			g.fail(rec, "", fmt.Errorf("%w: %s %s", errMethod, r.Method, p))
			return
		}
		g.models(rec, strings.TrimPrefix(strings.TrimPrefix(p, "/v1/models"), "/"))
	case p == "/v1/chat/completions" || p == "/v1/completions" || p == "/v1/embeddings":
		if r.Method != http.MethodPost {
			g.fail(rec, "", fmt.Errorf("%w: %s %s", errMethod, r.Method, p))
			return
		}
		model, err := readModel(rec, r, g.cfg.MaxBodyBytes)
		if err != nil {
			g.fail(rec, "", err)
			return
		}
		g.serve(rec, r, model, target{path: r.URL.Path, rawPath: r.URL.RawPath}, start)
	case strings.HasPrefix(p, "/d/"):
		dep, rest, err := splitDeploymentPath(r.URL.EscapedPath())
		if err != nil {
			g.fail(rec, "", err)
			return
		}
		path, err := url.PathUnescape(rest)
		if err != nil {
			g.fail(rec, "", fmt.Errorf("%w: path %q", ErrBadRequest, rest))
			return
		}
		g.serve(rec, r, dep, target{path: path, rawPath: rest}, start)
	default:
		g.fail(rec, "", fmt.Errorf("%w: %s", errNotFoundRoute, p))
	}
}

// splitDeploymentPath splits an escaped "/d/NAME/REST" into NAME
// (unescaped) and "/REST" (escaped; "/" when there is none).
func splitDeploymentPath(esc string) (dep, rest string, err error) {
	s := strings.TrimPrefix(esc, "/d/")
	seg, rest, found := strings.Cut(s, "/")
	if found {
		rest = "/" + rest
	} else {
		rest = "/"
	}
	dep, err = url.PathUnescape(seg)
	if err != nil || dep == "" {
		return "", "", fmt.Errorf("%w: no deployment in path %q", ErrBadRequest, esc)
	}
	return dep, rest, nil
}

// KeyRing holds the SHA-256 of each API key a pool accepts.
type KeyRing [][sha256.Size]byte

// NewKeyRing hashes keys.
func NewKeyRing(keys []string) KeyRing {
	var k KeyRing
	for _, key := range keys {
		k = append(k, sha256.Sum256([]byte(key)))
	}
	return k
}

// Allows reports whether r carries "Authorization: Bearer KEY" with one of
// the ring's keys (compared in constant time). An empty ring allows all.
func (k KeyRing) Allows(r *http.Request) bool {
	if len(k) == 0 {
		return true
	}
	const bearer = "Bearer "
	a := r.Header.Get("Authorization")
	if len(a) < len(bearer) || !strings.EqualFold(a[:len(bearer)], bearer) {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(a[len(bearer):])))
	ok := 0
	for _, key := range k {
		ok |= subtle.ConstantTimeCompare(sum[:], key[:])
	}
	return ok == 1
}

// serve sends r to a ready replica of dep, waiting for one when there is
// none.
func (g *Gateway) serve(w *recorder, r *http.Request, dep string, t target, start time.Time) {
	ready, _, known := g.lookup(dep, nil)
	if !known {
		g.fail(w, "", g.unknown(dep))
		return
	}
	st := g.state(dep)
	st.begin(g.cfg.Clock.Now())
	g.m.inFlight.WithLabelValues(dep).Inc()
	route := ""
	var avoid map[string]bool // replicas whose node said they are gone
	defer func() {
		st.end(g.cfg.Clock.Now())
		g.m.inFlight.WithLabelValues(dep).Dec()
		g.done(w, dep, route, start)
	}()
	for attempt := 1; ; attempt++ {
		if len(ready) == 0 {
			var err error
			if ready, err = g.wait(r.Context(), st, dep, avoid); err != nil {
				g.fail(w, dep, err)
				return
			}
		}
		var again bool
		var gone string
		route, again, gone = g.forward(w, r, dep, ready, t, attempt < maxAttempts)
		if !again {
			return
		}
		// No stream reached the replica's node, or it broke, or the node
		// said the replica is gone, and nothing was answered: that node
		// (or replica) is skipped now; try another replica, or wait for one.
		if gone != "" {
			if avoid == nil {
				avoid = map[string]bool{}
			}
			avoid[gone] = true
		}
		if r.GetBody != nil {
			body, err := r.GetBody()
			if err != nil {
				g.fail(w, dep, fmt.Errorf("%w: replaying the request: %v", ErrNoRoute, err))
				return
			}
			r.Body = body
		}
		ready, _, _ = g.lookup(dep, avoid)
	}
}

// maxAttempts bounds how often a request is sent again after the node of
// its replica could not be reached.
const maxAttempts = 3

// forward proxies r to a replica chosen among ready and returns the route
// it took. With retry set and a body that can be sent again, a node no
// stream reaches answers nothing and forward reports it unreachable, for
// the caller to try elsewhere.
func (g *Gateway) forward(w *recorder, r *http.Request, dep string, ready []Replica, t target, retry bool) (route string, again bool, gone string) {
	rep, release := g.choose(ready, nil)
	defer release()
	t.rep = rep
	t.retry = retry && (r.GetBody != nil || r.ContentLength == 0)
	proxy := g.local
	route = routeLocal
	if rep.Node == g.cfg.Self {
		u, err := url.Parse(rep.Endpoint)
		if err != nil || u.Host == "" {
			g.fail(w, dep, fmt.Errorf("%w: replica %s has endpoint %q", ErrNoRoute, rep.ID, rep.Endpoint))
			return route, false, ""
		}
		t.endpoint = u
	} else {
		if g.remote == nil {
			g.fail(w, dep, fmt.Errorf("%w: replica %s is on %s and this gateway has no streams", ErrNoRoute, rep.ID, rep.Node))
			return route, false, ""
		}
		proxy, route = g.remote, routeRemote
	}
	fullDuplex(w)
	proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, &t)))
	if t.gone {
		gone = rep.ID
	}
	return route, t.unreachable || t.gone, gone
}

// done accounts for an answered request. It runs deferred, also when the
// proxy aborts a response (http.ErrAbortHandler).
func (g *Gateway) done(w *recorder, dep, route string, start time.Time) {
	w.counted = true
	code := w.status
	if code == 0 {
		code = statusClientClosed
	}
	g.m.requests.WithLabelValues(dep, strconv.Itoa(code)).Inc()
	if route != "" && !w.first.IsZero() {
		g.m.ttfb.WithLabelValues(dep, route).Observe(w.first.Sub(start).Seconds())
	}
}

// statusClientClosed is counted for a request whose client left before an
// answer (nginx's 499).
const statusClientClosed = 499

// wait queues a request for dep until the Directory lists a ready replica
// (not one in avoid), asking the Scaler for one.
func (g *Gateway) wait(ctx context.Context, st *depState, dep string, avoid map[string]bool) ([]Replica, error) {
	if !st.enqueue(g.cfg.QueueSize) {
		return nil, fmt.Errorf("%w: %d requests wait for %q", ErrQueueFull, g.cfg.QueueSize, dep)
	}
	began := time.Now()
	g.m.queueDepth.WithLabelValues(dep).Inc()
	defer func() {
		st.dequeue()
		g.m.queueDepth.WithLabelValues(dep).Dec()
		g.m.coldWait.WithLabelValues(dep).Observe(time.Since(began).Seconds())
	}()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, g.cfg.QueueTimeout)
	defer cancel()
	retry := time.NewTimer(g.cfg.ScaleUpRetry)
	defer retry.Stop()
	var scaleErr error
	for {
		if g.cfg.Scaler != nil && st.scaleUpDue(time.Now(), g.cfg.ScaleUpRetry) {
			if err := g.cfg.Scaler.ScaleUp(ctx, dep); err != nil && ctx.Err() == nil {
				scaleErr = err
				g.cfg.Logger.Warn("gateway: scale up failed", "deployment", dep, "err", err)
			}
		}
		ready, changed, known := g.lookup(dep, avoid)
		if len(ready) > 0 {
			if st.found() {
				g.m.coldStarts.WithLabelValues(dep).Inc()
			}
			return ready, nil
		}
		if !known {
			return nil, g.unknown(dep)
		}
		select {
		case <-changed:
		case <-retry.C:
			retry.Reset(g.cfg.ScaleUpRetry)
		case <-ctx.Done():
			if parent.Err() != nil {
				return nil, ErrClientGone
			}
			if scaleErr != nil {
				return nil, fmt.Errorf("%w: %q after %v (scale up: %v)", ErrQueueTimeout, dep, g.cfg.QueueTimeout, scaleErr)
			}
			return nil, fmt.Errorf("%w: %q after %v", ErrQueueTimeout, dep, g.cfg.QueueTimeout)
		}
	}
}

// unreachableFor is how long a node whose stream could not be opened is
// skipped: about the pool's failure detection, after which the Directory
// has dropped a dead node's replicas anyway.
const unreachableFor = 5 * time.Second

func (g *Gateway) markUnreachable(p peer.ID) {
	g.lmu.Lock()
	g.unreachable[p] = g.cfg.Clock.Now().Add(unreachableFor)
	g.lmu.Unlock()
}

// lookup is the Directory's answer for dep, its ready replicas passed
// through reachable.
func (g *Gateway) lookup(dep string, avoid map[string]bool) (ready []Replica, changed <-chan struct{}, known bool) {
	ready, changed, known = g.cfg.Directory.Lookup(dep)
	return g.reachable(ready, avoid), changed, known
}

// reachable drops the replicas on nodes marked unreachable, and those in
// avoid (replica IDs whose node said they are gone, for this request).
func (g *Gateway) reachable(ready []Replica, avoid map[string]bool) []Replica {
	g.lmu.Lock()
	defer g.lmu.Unlock()
	if len(g.unreachable) == 0 && len(avoid) == 0 {
		return ready
	}
	now := g.cfg.Clock.Now()
	out := ready[:0:0] // the Directory's slice is not ours to change
	for _, r := range ready {
		if avoid[r.ID] {
			continue
		}
		if until, ok := g.unreachable[r.Node]; ok {
			if now.Before(until) {
				continue
			}
			delete(g.unreachable, r.Node)
		}
		out = append(out, r)
	}
	return out
}

// choose picks a replica among ready (restricted to keep when not nil)
// and counts a request in flight to it until release.
func (g *Gateway) choose(ready []Replica, keep func(Replica) bool) (Replica, func()) {
	if keep != nil {
		var kept []Replica
		for _, r := range ready {
			if keep(r) {
				kept = append(kept, r)
			}
		}
		ready = kept
	}
	g.lmu.Lock()
	rep, ok := pick(ready, g.cfg.Self, func(r Replica) int {
		return r.Load + g.loads[replicaKey{r.Node, r.ID}]
	}, g.rnd.IntN)
	if !ok {
		g.lmu.Unlock()
		return Replica{}, func() {}
	}
	k := replicaKey{rep.Node, rep.ID}
	g.loads[k]++
	g.lmu.Unlock()
	return rep, func() {
		g.lmu.Lock()
		if g.loads[k]--; g.loads[k] <= 0 {
			delete(g.loads, k)
		}
		g.lmu.Unlock()
	}
}

func (g *Gateway) rewriteLocal(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(*target)
	pr.Out.URL.Scheme = t.endpoint.Scheme
	pr.Out.URL.Host = t.endpoint.Host
	pr.Out.URL.Path, pr.Out.URL.RawPath = t.path, t.rawPath
	if base := strings.TrimSuffix(t.endpoint.Path, "/"); base != "" {
		pr.Out.URL.Path, pr.Out.URL.RawPath = base+t.path, ""
	}
	pr.Out.Host = ""
	if pr.In.Header.Get(hdrDeployment) != "" {
		// Forwarded by another gateway: keep what it said of the client.
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := pr.In.Header.Values(h); len(v) > 0 {
				pr.Out.Header[h] = v
			}
		}
		pr.Out.Header.Del(hdrDeployment)
		pr.Out.Header.Del(hdrReplica)
		return
	}
	pr.SetXForwarded()
}

func (g *Gateway) rewriteRemote(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(*target)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = t.rep.Node.String()
	pr.Out.URL.Path, pr.Out.URL.RawPath = t.path, t.rawPath
	pr.Out.Host = ""
	pr.Out.Header.Set(hdrDeployment, t.rep.Deployment)
	pr.Out.Header.Set(hdrReplica, t.rep.ID)
	pr.SetXForwarded()
}

// proxyError answers when a replica or the way to it fails before the
// answer began.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client left; nobody to answer
	}
	t, _ := r.Context().Value(targetKey{}).(*target)
	id := ""
	if t != nil {
		id = t.rep.ID
	}
	if errors.Is(err, errReplicaGone) && t != nil && t.retry {
		t.gone = true
		return
	}
	if errors.Is(err, ErrNoRoute) {
		if t != nil && t.rep.Node != g.cfg.Self {
			g.markUnreachable(t.rep.Node)
			if t.retry {
				t.unreachable = true
				return
			}
		}
		g.fail(w, "", fmt.Errorf("replica %s: %w", id, err))
		return
	}
	if t != nil && t.rep.Node != g.cfg.Self && t.retry {
		// The stream to the replica's node broke before any answer (the
		// node died or the network under it went): like a node no stream
		// reaches.
		g.markUnreachable(t.rep.Node)
		t.unreachable = true
		return
	}
	g.fail(w, "", fmt.Errorf("%w: replica %s: %v", errUpstream, id, err))
}

// remoteAnswer is the remote proxy's look at an answer before it is
// passed on: a node that holds no such replica any more is asked no more
// (the request goes elsewhere) when the request may be sent again.
func (g *Gateway) remoteAnswer(resp *http.Response) error {
	t, _ := resp.Request.Context().Value(targetKey{}).(*target)
	if t == nil || !t.retry || resp.Header.Get(hdrGone) == "" {
		return nil
	}
	_ = resp.Body.Close()
	return errReplicaGone
}

// serveForwarded answers a request another gateway sent over ProtocolID:
// only to a replica the Directory places on this node.
func (g *Gateway) serveForwarded(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	dep, id := r.Header.Get(hdrDeployment), r.Header.Get(hdrReplica)
	ready, _, known := g.cfg.Directory.Lookup(dep)
	if dep == "" || !known {
		rec.Header().Set(hdrGone, "1")
		g.fail(rec, "", fmt.Errorf("%w: deployment %q", ErrNotLocal, dep))
		g.done(rec, "", "", start)
		return
	}
	local := func(r Replica) bool { return r.Node == g.cfg.Self && r.Endpoint != "" }
	var rep Replica
	release := func() {}
	for _, r := range ready {
		if r.ID == id && local(r) {
			rep, release = g.choose([]Replica{r}, nil)
			break
		}
	}
	if rep.ID == "" {
		// The named replica went away: any other here will do.
		rep, release = g.choose(ready, local)
	}
	defer release()
	route := ""
	defer func() { g.done(rec, dep, route, start) }()
	if rep.ID == "" {
		rec.Header().Set(hdrGone, "1")
		g.fail(rec, dep, fmt.Errorf("%w: replica %q of %q", ErrNotLocal, id, dep))
		return
	}
	u, err := url.Parse(rep.Endpoint)
	if err != nil || u.Host == "" {
		g.fail(rec, dep, fmt.Errorf("%w: replica %s has endpoint %q", ErrNoRoute, rep.ID, rep.Endpoint))
		return
	}
	route = routeForwarded
	t := &target{rep: rep, endpoint: u, path: r.URL.Path, rawPath: r.URL.RawPath}
	fullDuplex(rec)
	g.local.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), targetKey{}, t)))
}

// fullDuplex keeps net/http from closing the request body once the answer
// begins: the proxy's transport may still be reading it (the check for
// bytes past Content-Length), and a closed body there aborts the answer
// mid-stream. It also lets a /d/ workload answer while the upload flows.
func fullDuplex(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
}

// Tick closes a sampling interval at now: each deployment with traffic
// since the last Tick is reported to the Reporter, and the ready-replica
// gauges are refreshed. Run calls it every ReportInterval.
func (g *Gateway) Tick(now time.Time) {
	g.mu.Lock()
	names := make([]string, 0, len(g.deps))
	states := make([]*depState, 0, len(g.deps))
	for n, st := range g.deps {
		names = append(names, n)
		states = append(states, st)
	}
	g.mu.Unlock()
	for i, st := range states {
		s, report := st.sample(now, g.cfg.ReportInterval)
		if report && g.cfg.Reporter != nil {
			g.cfg.Reporter.Report(names[i], s)
		}
	}
	served := map[string]bool{}
	for _, dep := range g.cfg.Directory.Deployments() {
		served[dep] = true
		ready, _, _ := g.cfg.Directory.Lookup(dep)
		nLocal := 0
		for _, r := range ready {
			if r.Node == g.cfg.Self {
				nLocal++
			}
		}
		g.m.replicas.WithLabelValues(dep, "local").Set(float64(nLocal))
		g.m.replicas.WithLabelValues(dep, "remote").Set(float64(len(ready) - nLocal))
	}
	// Forget deployments that are gone and quiet.
	g.mu.Lock()
	for n, st := range g.deps {
		if !served[n] && st.idle() {
			delete(g.deps, n)
			g.m.replicas.DeleteLabelValues(n, "local")
			g.m.replicas.DeleteLabelValues(n, "remote")
		}
	}
	g.mu.Unlock()
}

// Run calls Tick every ReportInterval until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			g.Tick(g.cfg.Clock.Now())
		}
	}
}

// recorder notes an answer's status and when its first byte went out.
type recorder struct {
	http.ResponseWriter
	status  int
	first   time.Time
	counted bool // done ran
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.first.IsZero() {
		r.first = time.Now()
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if r.first.IsZero() && r.status != 0 {
		r.first = time.Now()
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// bufferPool lends the proxies their copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
