package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/gateway"
)

// ServeProtocol carries serving reports between members: one stream, one
// frame (uvarint length, JSON serveReport) from a node to a member.
//
// Why a report of its own rather than the deployment status or the node
// record: a replica's phase (starting, ready, failed) is known first by
// the node that runs it, and it changes within a cold start, the moment a
// waiting request cares about. The node is the only writer of its report,
// so there is nothing to merge; pushing it to every alive member on each
// change (and every reportInterval, so a member that missed one or joined
// later catches up) reaches every gateway in one hop, without waiting for
// the coordinator's next step or a record's rate-limited republish. The
// same report carries the node's gateway traffic, which tells whichever
// member coordinates a scale-to-zero deployment that it is in use.
const (
	ServeProtocol = protocol.ID("/shoal/serve/1.0.0")
	// reportInterval: how often a node pushes its report unprompted.
	reportInterval = 2 * time.Second
	// reportTTL: a report older than this is ignored (its node is gone or
	// cut off; its membership state will follow).
	reportTTL      = 3 * reportInterval
	maxReportBytes = 1 << 20
	// defaultIdleTimeout: a scale-to-zero deployment whose template names
	// no idleTimeout releases its replicas after this long without traffic.
	defaultIdleTimeout = 10 * time.Minute
)

// serveReport is one node's serving state.
type serveReport struct {
	Replicas []ReplicaRun `json:"replicas"`
	// IdleMillis: for each deployment this node's gateway saw traffic for,
	// how long ago it last did (milliseconds; relative, so clocks need not
	// agree).
	IdleMillis map[string]int64 `json:"idle_ms,omitempty"`
	// Waiting: requests this node's gateway holds for a replica.
	Waiting map[string]int `json:"waiting,omitempty"`
}

// activity is the last time any gateway of the pool saw traffic for each
// deployment, as this node learned it. Safe for concurrent use.
type activity struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func newActivity() *activity { return &activity{last: map[string]time.Time{}} }

func (a *activity) note(dep string, at time.Time) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if at.After(a.last[dep]) {
		a.last[dep] = at
	}
}

// lastTraffic is when a peer's report of ms idle milliseconds puts a
// deployment's last request: a peer's number, so never in the future
// (which would keep a scale-to-zero deployment awake for ever) and never
// large enough to overflow.
func lastTraffic(now time.Time, ms int64) time.Time {
	ms = min(max(ms, 0), int64(24*time.Hour/time.Millisecond))
	return now.Add(-time.Duration(ms) * time.Millisecond)
}

// since is how long ago dep last saw traffic, and whether it ever did.
func (a *activity) since(dep string, now time.Time) (time.Duration, bool) {
	if a == nil {
		return 0, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.last[dep]
	return now.Sub(t), ok
}

// serving is the daemon's side of serving: it exchanges serving reports
// with the members and is the gateway's Directory, Scaler and Reporter.
// It owns one loop goroutine and the pushes it starts; close stops them.
type serving struct {
	self    peer.ID
	members Membership
	streams streams
	runner  *replicaRunner
	dep     *deployService
	act     *activity
	log     *slog.Logger
	waiting func(dep string) int  // the local gateway's queue; nil before it runs
	loads   func() map[string]int // the local gateway's in-flight requests per local replica; nil before it runs
	scale   *scaling              // failed replicas and autoscaling; nil: not kept

	// draining: the node leaves soon; its ready replicas show as stopping.
	draining atomic.Bool

	mu      sync.Mutex
	reports map[peer.ID]received
	local   map[string]time.Time // this gateway's last traffic per deployment
	changed chan struct{}
	sig     string

	poke   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type received struct {
	at  time.Time
	rep serveReport
}

var (
	_ gateway.Directory = (*serving)(nil)
	_ gateway.Scaler    = (*serving)(nil)
	_ gateway.Reporter  = (*serving)(nil)
)

func newServing(sv *serving) *serving {
	sv.reports = map[peer.ID]received{}
	sv.local = map[string]time.Time{}
	sv.changed = make(chan struct{})
	sv.poke = make(chan struct{}, 1)
	sv.log = sv.log.With("component", "serving")
	sv.ctx, sv.cancel = context.WithCancel(context.Background())
	sv.streams.Handle(ServeProtocol, sv.handle)
	sv.wg.Add(1)
	go sv.loop()
	return sv
}

func (sv *serving) close() {
	if sv == nil {
		return
	}
	sv.cancel()
	sv.wg.Wait()
}

func (sv *serving) kick() {
	select {
	case sv.poke <- struct{}{}:
	default:
	}
}

func (sv *serving) loop() {
	defer sv.wg.Done()
	t := time.NewTicker(reportInterval)
	defer t.Stop()
	for {
		select {
		case <-sv.ctx.Done():
			return
		case <-sv.poke:
		case <-t.C:
		}
		sv.refresh()
		rep := sv.report()
		for _, p := range alivePeers(sv.members, sv.self) {
			sv.push(p, rep)
		}
	}
}

// own is this node's replicas as the pool should see them: while the node
// drains before leaving, its ready replicas show as stopping, so no
// gateway, here or on another node, sends them a new request.
func (sv *serving) own() []ReplicaRun {
	xs := sv.runner.list()
	if sv.draining.Load() {
		for i := range xs {
			if xs[i].State == PhaseReady {
				xs[i].State, xs[i].Reason = PhaseStopping, "node leaving the pool"
			}
		}
	}
	return xs
}

// drain marks this node's replicas stopping and tells every alive member
// at once, waiting for their acknowledgements until ctx ends.
func (sv *serving) drain(ctx context.Context) {
	sv.draining.Store(true)
	sv.refresh()
	rep := sv.report()
	var wg sync.WaitGroup
	for _, p := range alivePeers(sv.members, sv.self) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pushFrame(ctx, sv.streams, p, ServeProtocol, rep, 2*time.Second); err != nil {
				sv.log.Debug("drain report not pushed", "peer", p, "err", err)
			}
		}()
	}
	wg.Wait()
}

// report is this node's serving state now.
func (sv *serving) report() serveReport {
	rep := serveReport{Replicas: sv.withLoads(sv.own())}
	now := time.Now()
	sv.mu.Lock()
	for dep, t := range sv.local {
		if rep.IdleMillis == nil {
			rep.IdleMillis = map[string]int64{}
		}
		rep.IdleMillis[dep] = now.Sub(t).Milliseconds()
	}
	sv.mu.Unlock()
	rep.Waiting = sv.localWaiting()
	return rep
}

// localWaiting is how many requests this node's gateway queues per
// deployment, for those it has seen traffic for and queues any; nil when
// none.
func (sv *serving) localWaiting() map[string]int {
	sv.mu.Lock()
	w := sv.waiting
	deps := make([]string, 0, len(sv.local))
	for dep := range sv.local {
		deps = append(deps, dep)
	}
	sv.mu.Unlock()
	if w == nil {
		return nil
	}
	var out map[string]int
	for _, dep := range deps {
		if n := w(dep); n > 0 {
			if out == nil {
				out = map[string]int{}
			}
			out[dep] = n
		}
	}
	return out
}

func (sv *serving) push(p peer.ID, rep serveReport) {
	if sv.ctx.Err() != nil {
		return
	}
	sv.wg.Add(1)
	go func() {
		defer sv.wg.Done()
		if err := pushFrame(sv.ctx, sv.streams, p, ServeProtocol, rep, 5*time.Second); err != nil {
			sv.log.Debug("serving report not pushed", "peer", p, "err", err)
		}
	}()
}

func (sv *serving) handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := readFrame(bufio.NewReader(st), maxReportBytes)
	if err != nil {
		st.Reset()
		return
	}
	var rep serveReport
	if err := json.Unmarshal(b, &rep); err != nil {
		st.Reset()
		return
	}
	from := st.Conn().RemotePeer()
	now := time.Now()
	for i := range rep.Replicas {
		x := &rep.Replicas[i]
		x.Node = from.String() // a node speaks for itself only
		x.Endpoint = ""
		if x.State == PhaseFailed && sv.scale != nil {
			sv.scale.noteFailure(replicaFailure{Deployment: x.Deployment, Node: x.Node, Reservation: x.Reservation, Reason: x.Reason, At: now})
		}
	}
	for dep, ms := range rep.IdleMillis {
		sv.act.note(dep, lastTraffic(now, ms))
	}
	for dep := range rep.Waiting {
		sv.act.note(dep, now)
	}
	sv.mu.Lock()
	sv.reports[from] = received{at: now, rep: rep}
	sv.mu.Unlock()
	_, _ = st.Write([]byte{1})
	sv.refresh()
	if len(rep.Waiting) > 0 {
		sv.dep.kick()
	}
}

// all is every replica in the pool: this node's from its runner, the
// others' from their fresh reports while they are alive.
func (sv *serving) all() []ReplicaRun {
	out := sv.own()
	for _, r := range sv.fresh() {
		out = append(out, r.Replicas...)
	}
	return out
}

// fresh are the other alive members' reports that are not too old.
func (sv *serving) fresh() []serveReport {
	alive := map[peer.ID]bool{}
	for _, m := range sv.members.Members() {
		if m.State == mesh.StateAlive {
			alive[m.PeerID] = true
		}
	}
	now := time.Now()
	var out []serveReport
	sv.mu.Lock()
	for p, r := range sv.reports {
		if p == sv.self || !alive[p] || now.Sub(r.at) > reportTTL {
			continue
		}
		out = append(out, r.rep)
	}
	sv.mu.Unlock()
	return out
}

// withLoads fills in the requests this node's gateway has in flight on
// each of xs (this node's replicas).
func (sv *serving) withLoads(xs []ReplicaRun) []ReplicaRun {
	sv.mu.Lock()
	f := sv.loads
	sv.mu.Unlock()
	if f == nil {
		return xs
	}
	loads := f()
	for i := range xs {
		xs[i].InFlight = loads[xs[i].ID]
	}
	return xs
}

// load is the pool's load on deployment dep for its autoscaler: requests
// in flight on its ready replicas (this node's from its gateway, the
// others' from their reports) plus requests that wait for a replica on any
// gateway; and how many replicas are ready.
func (sv *serving) load(dep string) (concurrency float64, ready int) {
	count := func(xs []ReplicaRun) {
		for _, x := range xs {
			if x.Deployment == dep && x.State == PhaseReady {
				ready++
				concurrency += float64(x.InFlight)
			}
		}
	}
	count(sv.withLoads(sv.own()))
	for _, r := range sv.fresh() {
		count(r.Replicas)
		concurrency += float64(r.Waiting[dep])
	}
	sv.mu.Lock()
	w := sv.waiting
	sv.mu.Unlock()
	if w != nil {
		concurrency += float64(w(dep))
	}
	return concurrency, ready
}

// refresh wakes the requests waiting on a directory change when the set
// of ready replicas changed.
func (sv *serving) refresh() {
	var keys []string
	for _, x := range sv.all() {
		if x.State == PhaseReady {
			keys = append(keys, x.Deployment+"/"+x.Node+"/"+x.ID+"@"+x.Endpoint)
		}
	}
	sort.Strings(keys)
	sig := strings.Join(keys, ";")
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sig != sv.sig {
		sv.sig = sig
		close(sv.changed)
		sv.changed = make(chan struct{})
	}
}

// Lookup implements gateway.Directory.
func (sv *serving) Lookup(dep string) ([]gateway.Replica, <-chan struct{}, bool) {
	sv.mu.Lock()
	ch := sv.changed
	sv.mu.Unlock()
	rec, ok := sv.dep.record(dep)
	if !ok || rec.Spec.Deleted {
		return nil, ch, false
	}
	var out []gateway.Replica
	for _, x := range sv.all() {
		if x.Deployment != dep || x.State != PhaseReady {
			continue
		}
		p, err := peer.Decode(x.Node)
		if err != nil {
			continue
		}
		out = append(out, gateway.Replica{ID: x.ID, Deployment: dep, Node: p, Endpoint: x.Endpoint, Load: x.InFlight})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, ch, true
}

// Deployments implements gateway.Directory.
func (sv *serving) Deployments() []string {
	var out []string
	for _, d := range sv.dep.list() {
		out = append(out, d.ID)
	}
	return out
}

// ScaleUp implements gateway.Scaler: it marks the deployment in use and
// tells every member at once, so that its coordinator (whichever member
// that is) places a replica on its next step.
func (sv *serving) ScaleUp(ctx context.Context, dep string) error {
	now := time.Now()
	sv.mu.Lock()
	sv.local[dep] = now
	sv.mu.Unlock()
	sv.act.note(dep, now)
	sv.kick()
	sv.dep.kick()
	return nil
}

// Report implements gateway.Reporter: an interval with traffic marks the
// deployment in use.
func (sv *serving) Report(dep string, s gateway.Sample) {
	if s.Requests == 0 && s.Concurrency == 0 && s.Waiting == 0 {
		return
	}
	sv.mu.Lock()
	if s.At.After(sv.local[dep]) {
		sv.local[dep] = s.At
	}
	sv.mu.Unlock()
	sv.act.note(dep, s.At)
}

// runs is every replica of the pool that this node knows of, for ps.
func (sv *serving) runs() []ReplicaRun {
	if sv == nil {
		return nil
	}
	out := sv.withLoads(sv.own())
	for _, r := range sv.fresh() {
		out = append(out, r.Replicas...)
	}
	return out
}

// gatewayServer is the gateway listening on its TCP address.
type gatewayServer struct {
	gw     *gateway.Gateway
	srv    *http.Server
	addr   string
	cancel context.CancelFunc
	done   chan struct{} // Serve returned
	ticked chan struct{} // Run returned
}

// startGateway starts the gateway: it always serves the requests other
// nodes' gateways forward to this node's replicas (over the mesh), and
// listens for clients on addr unless addr is empty; with keys, clients
// must present one of them (members' forwarded requests need none).
func startGateway(addr string, keys []string, sv *serving, m any, log *slog.Logger, reg prometheus.Registerer) (*gatewayServer, error) {
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, err
		}
	}
	cfg := gateway.Config{
		Self: sv.self, Directory: sv, Scaler: sv, Reporter: sv,
		Registerer:   reg,
		APIKeys:      keys,
		Logger:       log.With("component", "gateway"),
		QueueTimeout: 2 * time.Minute,
		ScaleUpRetry: 2 * time.Second,
	}
	if so, ok := m.(gateway.StreamOpener); ok {
		cfg.Streams = so
	}
	if ss, ok := m.(gateway.StreamServer); ok {
		cfg.Server = ss
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	sv.mu.Lock()
	sv.waiting, sv.loads = gw.Waiting, gw.LocalLoads
	sv.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	g := &gatewayServer{gw: gw, cancel: cancel, done: make(chan struct{})}
	g.srv = &http.Server{Handler: withDashboard(gw, sv, m, reg, cfg.APIKeys, log), ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	if ln == nil {
		close(g.done)
	} else {
		g.addr = ln.Addr().String()
	}
	g.ticked = make(chan struct{})
	go func() {
		defer close(g.ticked)
		_ = gw.Run(ctx)
	}()
	if ln != nil {
		go func() {
			defer close(g.done)
			_ = g.srv.Serve(ln)
		}()
		log.Info("gateway listening", "addr", g.addr, "api_keys", len(keys))
	}
	return g, nil
}

func (g *gatewayServer) close() {
	if g == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil {
		g.srv.Close()
	}
	<-g.done
	g.cancel()
	<-g.ticked
	g.gw.Close()
}

// servingParts is what startServing started; close stops it in order.
type servingParts struct {
	runner *replicaRunner
	sv     *serving
	gw     *gatewayServer
}

func (p *servingParts) close() {
	if p == nil {
		return
	}
	p.gw.close()
	p.sv.close()
	p.runner.close()
}

// drain runs before a graceful leave: the ledger takes no new
// reservation, the pool learns that this node's replicas are stopping, and
// the requests in flight on them (forwarded ones included) get until
// timeout to finish. The replicas stop afterwards, with the daemon.
func (p *servingParts) drain(timeout time.Duration, log *slog.Logger) {
	if p == nil {
		return
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	p.runner.led.setLeaving()
	p.sv.drain(ctx)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		n := p.inFlight()
		if n == 0 {
			log.Info("drained", "took", time.Since(began).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("drain timed out; stopping replicas with requests in flight", "in_flight", n, "timeout", timeout)
			return
		case <-t.C:
		}
	}
}

// inFlight is the requests in flight on this node's replicas.
func (p *servingParts) inFlight() int {
	if p.gw == nil {
		return 0
	}
	n := 0
	for _, v := range p.gw.gw.LocalLoads() {
		n += v
	}
	return n
}

func (p *servingParts) address() string {
	if p == nil || p.gw == nil {
		return ""
	}
	return p.gw.addr
}

// startServing starts the replica runner on dep's ledger, the serving
// reports and, with Config.Gateway set, the gateway. A daemon without
// deployments (a test mesh without streams) serves nothing.
func (d *Daemon) startServing(home string, log *slog.Logger, m meshNode, dep *deployService, wc *weights, act *activity, reg prometheus.Registerer) (*servingParts, error) {
	if dep == nil {
		return nil, nil
	}
	be, rt, err := openRuntimes(context.Background(), d.cfg.Runtime, home, m.ID().String(), m.PoolID(), d.declared, log)
	if err != nil {
		return nil, err
	}
	p := &servingParts{}
	p.runner = &replicaRunner{
		self: m.ID().String(), backend: be, rt: rt, led: dep.led, record: dep.record, weights: wc,
		version: d.cfg.Version, log: log, runs: map[string]*replicaRun{},
		sup: runtime.SupervisorConfig{MaxRestarts: 3},
	}
	p.runner.gang = &gangNet{self: m.ID(), streams: dep.cfg.Streams, members: m, port: p.runner.gangPort, log: log.With("component", "gang")}
	dep.cfg.Streams.Handle(GangProtocol, p.runner.gang.handle)
	p.sv = &serving{self: m.ID(), members: m, streams: dep.cfg.Streams, dep: dep, act: act, log: log, runner: p.runner}
	p.sv.scale = newScaling(dep, defaultFailurePolicy(), p.sv.load, log)
	p.sv = newServing(p.sv)
	p.runner.onChange, p.runner.onFailed = p.sv.kick, p.sv.scale.noteFailure
	dep.mu.Lock()
	dep.hook = p.sv.scale
	dep.mu.Unlock()
	newReplicaRunner(p.runner)
	dep.runs, dep.logs = p.sv.runs, p.runner.logs
	if p.gw, err = startGateway(d.cfg.Gateway, d.cfg.APIKeys, p.sv, m, log, reg); err != nil {
		p.close()
		return nil, fmt.Errorf("node: gateway on %s: %w; pass --gateway with another address, or off", d.cfg.Gateway, err)
	}
	return p, nil
}
