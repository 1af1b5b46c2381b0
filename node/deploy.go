package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/runtime/template"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// DeployProtocol replicates deployment records: one stream carries one
// frame (uvarint length, JSON deployMessage) from the writer to a member.
//
// Why direct pushes rather than the DHT or a gossip topic: every member
// must hold every record (any of them may become a deployment's
// coordinator, and `shoal ps` on any node lists them all). A DHT keeps a
// value under a key but cannot list the keys, so a successor would not know
// which deployments exist; a gossip topic loses what a member missed while
// it was away. A writer pushes each change to every alive member at once,
// and every member pushes its whole (small) set to two random members every
// AntiEntropyInterval, so a member that missed a push, or joined later,
// converges within a few rounds. Records merge last-writer-wins per half
// (coordinator.Store), so the order of arrival does not matter.
const (
	DeployProtocol = protocol.ID("/shoal/deploy/1.0.0")
	maxDeployBytes = 8 << 20
	// DefaultStepInterval: how often the coordinator reconciles the
	// deployments this node owns (and at once after a change arrives).
	DefaultStepInterval = 250 * time.Millisecond
	// AntiEntropyInterval: how often the node pushes every record to two
	// random members.
	AntiEntropyInterval = 2 * time.Second
	// announceGap rate-limits the free-capacity announcement: a changed
	// ledger republishes the node record at most this often.
	announceGap = 500 * time.Millisecond
	// expireInterval: how often held and committed leases are checked.
	expireInterval = time.Second
	// tombstoneAge: removed deployments are forgotten this long after.
	tombstoneAge = time.Hour
	// DeploymentsFile keeps this member's copy of the deployment records,
	// so that a pool that restarts whole still knows its deployments.
	DeploymentsFile = "deployments.json"
)

// deployMessage is the body of a DeployProtocol frame.
type deployMessage struct {
	Records []coordinator.Record `json:"records"`
}

// Deployment errors.
var (
	// ErrBadDeployment: a deploy request is malformed (bad name, template,
	// parameters or replicas).
	ErrBadDeployment = errors.New("node: bad deployment")
	// ErrNoDeployments: this daemon's mesh cannot carry deployments.
	ErrNoDeployments = errors.New("node: deployments are not available on this daemon")
)

// deployConfig wires a deployService.
type deployConfig struct {
	Self     peer.ID
	Home     string
	Version  string
	Members  Membership
	Streams  streams
	Announce freeAnnouncer // nil: free capacity is not announced
	Inv      hardware.Inventory
	Clock    Clock
	Log      *slog.Logger
	// Activity says when the pool's gateways last saw traffic for a
	// deployment; nil: scale-to-zero deployments stay at zero.
	Activity *activity
	// Coordinator overrides timings (tests); Self is filled in.
	Coordinator  coordinator.Config
	StepInterval time.Duration
	// wrap, when set, wraps the coordinator's transport (tests inject
	// faults with it).
	wrap func(coordinator.Transport) coordinator.Transport
}

// deployService is the node's part in deployments: its ledger served over
// the reservation protocol, its copy of every deployment record, and the
// coordinator of the deployments rendezvous hashing gives it. It owns one
// loop goroutine and the pushes it starts; Close stops and waits for them.
type deployService struct {
	cfg   deployConfig
	self  string
	log   *slog.Logger
	led   *ledgerServer
	coord *coordinator.Coordinator
	tr    meshTransport
	view  meshView

	mu    sync.Mutex
	store *coordinator.Store
	dirty bool // store changed since the last save
	// runs lists the replicas running in the pool (set before the control
	// API serves; nil: none known).
	runs func() []ReplicaRun
	// logs writes the output of this node's replicas of a deployment (set
	// with runs; nil: none).
	logs func(ctx context.Context, dep string, w io.Writer) int
	// hook shapes each step (failed replicas, autoscaling; node/scale.go);
	// set once by startServing, under mu.
	hook stepHook
	// accounts is the credits ledger's standing per identity, for fair
	// share (set by startCredits, under mu; nil: every owner weighs 1).
	accounts func(peer.ID) market.Account

	poke   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newDeployService(cfg deployConfig) (*deployService, error) {
	if cfg.StepInterval == 0 {
		cfg.StepInterval = DefaultStepInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	self := cfg.Self.String()
	led, err := openLedger(cfg.Home, capacityOf(cfg.Inv), cfg.Clock.Now, cfg.Log)
	if err != nil {
		return nil, err
	}
	s := &deployService{
		cfg: cfg, self: self, log: cfg.Log.With("component", "deploy"), led: led,
		store: coordinator.NewStore(self), poke: make(chan struct{}, 1),
	}
	s.loadRecords()
	s.tr = meshTransport{self: self, local: led, s: cfg.Streams}
	s.view = meshView{members: cfg.Members, self: self, led: led}
	cc := cfg.Coordinator
	cc.Self = self
	if cc.FairShare == nil {
		cc.FairShare = s.fairShare
	}
	var tr coordinator.Transport = s.tr
	if cfg.wrap != nil {
		tr = cfg.wrap(tr)
	}
	if s.coord, err = coordinator.New(cc, s.view, tr); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cfg.Streams.Handle(ReserveProtocol, led.handleStream)
	cfg.Streams.Handle(DeployProtocol, s.handleDeploy)
	s.wg.Add(1)
	go s.loop()
	return s, nil
}

// fairShare orders the pool's waiting deployments by market.Order over
// this node's credits ledger (coordinator.FairShare).
func (s *deployService) fairShare(ws []coordinator.Waiting, held map[string]int64) []coordinator.Waiting {
	s.mu.Lock()
	acc := s.accounts
	s.mu.Unlock()
	return orderWaiting(ws, held, acc)
}

// setAccounts gives fair share the credits ledger's accounts.
func (s *deployService) setAccounts(acc func(peer.ID) market.Account) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts = acc
}

// Close stops the loop and every push under way.
func (s *deployService) Close() {
	if s == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
	s.saveRecords()
}

// setInventory follows hardware changes with the ledger's capacity.
func (s *deployService) setInventory(inv hardware.Inventory) {
	if s != nil {
		s.led.setCapacity(capacityOf(inv))
	}
}

func (s *deployService) kick() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

func (s *deployService) loop() {
	defer s.wg.Done()
	step := s.cfg.Clock.NewTicker(s.cfg.StepInterval)
	defer step.Stop()
	ae := s.cfg.Clock.NewTicker(AntiEntropyInterval)
	defer ae.Stop()
	exp := s.cfg.Clock.NewTicker(expireInterval)
	defer exp.Stop()
	ann := s.cfg.Clock.NewTicker(announceGap)
	defer ann.Stop()
	dirty := true
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.poke:
			s.step()
		case <-step.C():
			s.step()
		case <-ae.C():
			s.antiEntropy()
		case <-exp.C():
			s.saveRecords()
			if gone := s.led.expire(); len(gone) > 0 {
				s.log.Info("reservations expired", "count", len(gone), "first", gone[0].ID)
			}
		case <-s.led.changed:
			dirty = true
		case <-ann.C():
			if dirty && s.cfg.Announce != nil {
				s.cfg.Announce.SetFree(meshFree(s.led.free()))
				dirty = false
			}
		}
	}
}

// step runs the coordinator once and replicates the statuses it changed.
func (s *deployService) step() {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	s.store.Forget(now.Add(-tombstoneAge))
	recs := s.store.List()
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		hook.before(recs, now)
	}
	for i, r := range recs {
		if r.Spec.ScaleToZero && !s.inUse(r, now) {
			recs[i].Spec.Request.Replicas = 0
		}
	}
	ups := s.coord.Step(s.ctx, now, recs)
	if hook != nil {
		hook.after(ups, now)
	}
	var changed []coordinator.Record
	s.mu.Lock()
	for _, u := range ups {
		if u.Status.State != "" && u.Status.Since.IsZero() {
			u.Status.Since = now
		}
		if r, wrote := s.store.SetStatus(u.ID, u.Status); wrote {
			changed = append(changed, r)
			s.dirty = true
		}
	}
	s.mu.Unlock()
	if len(changed) > 0 {
		s.pushAll(changed)
	}
}

// inUse reports whether a scale-to-zero deployment saw traffic on some
// gateway within its idle timeout.
func (s *deployService) inUse(r coordinator.Record, now time.Time) bool {
	ago, ok := s.cfg.Activity.since(r.ID, now)
	return ok && ago < r.Spec.IdleTimeout
}

// record returns this member's copy of deployment name.
func (s *deployService) record(name string) (coordinator.Record, bool) {
	if s == nil {
		return coordinator.Record{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.store.Get(name)
}

// alivePeers are the other alive members.
func (s *deployService) alivePeers() []peer.ID {
	return alivePeers(s.cfg.Members, s.cfg.Self)
}

// pushAll sends recs to every alive member, in the background.
func (s *deployService) pushAll(recs []coordinator.Record) {
	for _, p := range s.alivePeers() {
		s.push(p, recs)
	}
}

func (s *deployService) antiEntropy() {
	s.mu.Lock()
	recs := s.store.List()
	s.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	peers := s.alivePeers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	for _, p := range peers[:min(2, len(peers))] {
		s.push(p, recs)
	}
}

func (s *deployService) push(p peer.ID, recs []coordinator.Record) {
	if s.ctx.Err() != nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := pushFrame(s.ctx, s.cfg.Streams, p, DeployProtocol, deployMessage{Records: recs}, 5*time.Second); err != nil {
			s.log.Debug("deployment records not pushed", "peer", p, "err", err)
		}
	}()
}

func (s *deployService) handleDeploy(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := readFrame(bufio.NewReader(st), maxDeployBytes)
	if err != nil {
		st.Reset()
		return
	}
	var msg deployMessage
	if err := json.Unmarshal(b, &msg); err != nil {
		s.log.Warn("dropped malformed deployment records", "from", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	if s.merge(msg.Records) {
		s.kick()
	}
	_, _ = st.Write([]byte{1})
}

// merge applies records received from a member.
func (s *deployService) merge(recs []coordinator.Record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, r := range recs {
		ch, err := s.store.Merge(r)
		if err != nil {
			s.log.Warn("dropped a deployment record", "id", r.ID, "err", err)
		}
		changed = changed || ch
	}
	s.dirty = s.dirty || changed
	return changed
}

// DeployRequest is the body of POST /v1/deployments.
type DeployRequest struct {
	// Name of the deployment; default the template's name. Deploying an
	// existing name replaces its spec.
	Name string `json:"name,omitempty"`
	// Template names a built-in template; TemplateYAML is a template file's
	// content instead (`shoal deploy -f FILE`).
	Template     string            `json:"template,omitempty"`
	TemplateYAML string            `json:"template_yaml,omitempty"`
	Params       map[string]string `json:"params,omitempty"`
	// Replicas overrides the template's count (0: the template's
	// minReplicas, at least 1; a gang: the sum of its roles).
	Replicas int `json:"replicas,omitempty"`
	// MaxPrice is the most the deployment pays per GPU-hour, in credits
	// ("2.5"); empty or "0" is no limit.
	MaxPrice string `json:"max_price,omitempty"`
}

// Deployment is one element of GET /v1/deployments: the replicated record
// and the member that coordinates it in this node's view.
type Deployment struct {
	coordinator.Record
	Owner string `json:"owner"`
	// Runs are the replicas nodes report running (or starting, or
	// failed) for it.
	Runs []ReplicaRun `json:"runs"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// submit renders the request into a spec, writes it and replicates it.
func (s *deployService) submit(req DeployRequest) (Deployment, error) {
	var t *template.Template
	var err error
	switch {
	case req.TemplateYAML != "":
		t, err = template.Parse([]byte(req.TemplateYAML))
	case req.Template != "":
		var c *template.Catalog
		if c, err = template.Builtin(s.cfg.Version); err == nil {
			t, err = c.Get(req.Template)
		}
	default:
		err = errors.New("name a template or send a template file")
	}
	if err != nil {
		return Deployment{}, fmt.Errorf("%w: %w", ErrBadDeployment, err)
	}
	spec, err := t.Render(req.Params)
	if err != nil {
		return Deployment{}, fmt.Errorf("%w: %w", ErrBadDeployment, err)
	}
	name := req.Name
	if name == "" {
		name = t.Name
	}
	if !nameRE.MatchString(name) {
		return Deployment{}, fmt.Errorf("%w: name %q: use 1-63 lower-case letters, digits and '-'", ErrBadDeployment, name)
	}
	if req.Replicas < 0 || req.Replicas > coordinator.MaxReplicas {
		return Deployment{}, fmt.Errorf("%w: %d replicas, want 1..%d", ErrBadDeployment, req.Replicas, coordinator.MaxReplicas)
	}
	r, err := requestOf(spec, req.Replicas)
	if err != nil {
		return Deployment{}, fmt.Errorf("%w: %w", ErrBadDeployment, err)
	}
	if req.MaxPrice != "" {
		p, err := market.ParseCredits(req.MaxPrice)
		if err != nil {
			return Deployment{}, fmt.Errorf("%w: max price: %w", ErrBadDeployment, err)
		}
		r.MaxPrice = p.Credits()
	}
	r.ID = name
	cs := coordinator.Spec{Name: name, Template: spec.Template, Params: spec.Params, Request: r, Updated: s.cfg.Clock.Now(), Owner: s.self}
	if req.TemplateYAML != "" {
		cs.Source = req.TemplateYAML
	}
	if spec.Kind == template.Service && spec.Scaling.MinReplicas == 0 && req.Replicas == 0 {
		// Scales to zero: no replica until the first request; Replicas is
		// the count while it has traffic.
		cs.ScaleToZero = true
		cs.IdleTimeout = time.Duration(spec.Scaling.IdleTimeout)
		if cs.IdleTimeout <= 0 {
			cs.IdleTimeout = defaultIdleTimeout
		}
	}
	s.mu.Lock()
	rec := s.store.Put(name, cs)
	s.dirty = true
	s.mu.Unlock()
	s.pushAll([]coordinator.Record{rec})
	s.kick()
	return s.viewOf(rec), nil
}

func (s *deployService) remove(name string) (Deployment, error) {
	s.mu.Lock()
	rec, err := s.store.Delete(name, s.cfg.Clock.Now())
	s.dirty = s.dirty || err == nil
	s.mu.Unlock()
	if err != nil {
		return Deployment{}, err
	}
	s.pushAll([]coordinator.Record{rec})
	s.kick()
	return s.viewOf(rec), nil
}

// ScaleRequest is the body of POST /v1/deployments/{name}/scale.
type ScaleRequest struct {
	// Replicas: N ≥ 1 keeps N replicas running; 0 lets the deployment
	// scale to zero (one replica while it has traffic, none after its idle
	// timeout).
	Replicas int `json:"replicas"`
}

// scale writes a new replica count into deployment name's spec.
func (s *deployService) scale(name string, n int) (Deployment, error) {
	if n < 0 || n > coordinator.MaxReplicas {
		return Deployment{}, fmt.Errorf("%w: %d replicas, want 0..%d", ErrBadDeployment, n, coordinator.MaxReplicas)
	}
	s.mu.Lock()
	rec, ok := s.store.Get(name)
	if !ok || rec.Spec.Deleted {
		s.mu.Unlock()
		return Deployment{}, fmt.Errorf("%w: %s", coordinator.ErrUnknownDeployment, name)
	}
	spec := rec.Spec
	if spec.Request.Gang {
		s.mu.Unlock()
		return Deployment{}, fmt.Errorf("%w: %s is a gang; its size is its template's", ErrBadDeployment, name)
	}
	if n == 0 {
		spec.ScaleToZero = true
		spec.Request.Replicas = max(1, spec.Request.Replicas)
		if spec.IdleTimeout <= 0 {
			spec.IdleTimeout = defaultIdleTimeout
		}
	} else {
		spec.ScaleToZero, spec.Request.Replicas = false, n
	}
	spec.Updated = s.cfg.Clock.Now()
	rec = s.store.Put(name, spec)
	s.dirty = true
	s.mu.Unlock()
	s.pushAll([]coordinator.Record{rec})
	s.kick()
	return s.viewOf(rec), nil
}

// handleLogs answers the output of this node's replicas of a deployment
// as text, each after a "== replica ID ==" line, then a line naming the
// nodes that run its other replicas.
func (s *deployService) handleLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rec, ok := s.record(name)
	if !ok || rec.Spec.Deleted {
		writeError(w, http.StatusNotFound, "no deployment %q; `shoal ps` lists them", name)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	n := 0
	if s.logs != nil {
		n = s.logs(r.Context(), name, w)
	}
	var elsewhere []string
	if s.runs != nil {
		for _, x := range s.runs() {
			if x.Deployment == name && x.Node != s.self {
				elsewhere = append(elsewhere, x.Node)
			}
		}
	}
	if len(elsewhere) > 0 {
		fmt.Fprintf(w, "== other replicas run on %s; run `shoal logs %s` there ==\n", strings.Join(elsewhere, ", "), name)
	} else if n == 0 {
		fmt.Fprintf(w, "== no replica of %s runs now ==\n", name)
	}
}

func (s *deployService) handleScale(w http.ResponseWriter, r *http.Request) {
	var req ScaleRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "scale request: %v", err)
		return
	}
	name := r.PathValue("name")
	d, err := s.scale(name, req.Replicas)
	switch {
	case errors.Is(err, coordinator.ErrUnknownDeployment):
		writeError(w, http.StatusNotFound, "no deployment %q; `shoal ps` lists them", name)
	case err != nil:
		writeError(w, http.StatusBadRequest, "%v", err)
	default:
		writeJSON(w, http.StatusOK, d)
	}
}

func (s *deployService) list() []Deployment {
	s.mu.Lock()
	recs := s.store.List()
	s.mu.Unlock()
	out := []Deployment{}
	ids, runs := s.placement()
	for _, r := range recs {
		if !r.Spec.Deleted {
			out = append(out, viewOf(r, ids, runs))
		}
	}
	return out
}

// viewOf is one deployment as the API shows it.
func (s *deployService) viewOf(r coordinator.Record) Deployment {
	ids, runs := s.placement()
	return viewOf(r, ids, runs)
}

// placement is what a view of a deployment is made of besides its
// record: the nodes the owner is elected among and every replica run.
func (s *deployService) placement() (ids []string, runs []ReplicaRun) {
	for _, n := range s.view.Nodes() {
		ids = append(ids, n.ID)
	}
	if s.runs != nil {
		runs = s.runs()
	}
	return ids, runs
}

func viewOf(r coordinator.Record, ids []string, runs []ReplicaRun) Deployment {
	d := Deployment{Record: r, Owner: coordinator.Owner(r.ID, ids), Runs: []ReplicaRun{}}
	for _, x := range runs {
		if x.Deployment == r.ID {
			d.Runs = append(d.Runs, x)
		}
	}
	return d
}

// requestOf turns a rendered template into one replica's request. Whole
// GPUs ask for whole cards of at least minVRAM; a gpuFraction asks for that
// share of one card of at least minVRAM and takes minVRAM of its memory. A gang places the sum of its
// roles' counts, all or none, with the first role's resources (roles of
// different sizes are not told apart yet).
func requestOf(spec *template.Spec, replicas int) (scheduler.Request, error) {
	res := spec.Resources
	var r scheduler.Request
	if spec.Kind == template.Gang && spec.Gang != nil {
		n := 0
		for i, role := range spec.Gang.Roles {
			n += role.Count
			if i == 0 && role.Resources != nil {
				res = *role.Resources
			}
		}
		r.Gang = true
		r.Replicas = max(n, 1)
	} else {
		r.Replicas = replicas
		if r.Replicas == 0 {
			r.Replicas = max(1, spec.Scaling.MinReplicas)
		}
	}
	r.CPUMilli = int64(math.Ceil(res.CPU * 1000))
	r.MemoryBytes = uint64(max(0, int64(res.Memory)))
	switch {
	case res.GPUFraction > 0:
		r.GPUs = 1
		r.MilliGPU = min(scheduler.MilliPerGPU, max(1, int(math.Round(res.GPUFraction*scheduler.MilliPerGPU))))
		r.VRAM = uint64(max(0, int64(res.MinVRAM)))
		r.MinVRAM = r.VRAM
	case res.GPUs > 0:
		r.GPUs = res.GPUs
		r.MinVRAM = uint64(max(0, int64(res.MinVRAM)))
	}
	if r.GPUs > 0 {
		for _, a := range res.Arch {
			r.Archs = append(r.Archs, strings.ToLower(a))
		}
	}
	if spec.Priority == template.Inference {
		r.Class, r.Priority = scheduler.Inference, 10
	}
	if spec.Weights != nil {
		r.ModelID = spec.Weights.Model
	}
	return r, nil
}

// meshView is the pool as the coordinator sees it: alive members with a
// record, each as a scheduler node with the free capacity it announced
// (this node's own straight from its ledger).
type meshView struct {
	members Membership
	self    string
	led     *ledgerServer
}

func (v meshView) Nodes() []scheduler.Node {
	var out []scheduler.Node
	for _, m := range v.members.Members() {
		if m.State != mesh.StateAlive || m.Record == nil {
			continue
		}
		n := schedNode(m.PeerID.String(), m.Record)
		if n.ID == v.self {
			applyFree(&n, wireFree(v.led.free()))
		} else if m.Record.Free != nil {
			applyFree(&n, fromMeshFree(*m.Record.Free))
		}
		out = append(out, n)
	}
	return out
}

// nodePrice is the price the scheduler compares with a deployment's limit:
// the highest the node asks for any of its GPUs (the scheduler prices a
// node, not a card, so a mixed node is judged by its dearest card).
func nodePrice(p mesh.Price, gpus []hardware.GPU) float64 {
	if len(gpus) == 0 {
		return p.PerGPUHour
	}
	hi := 0.0
	for _, g := range gpus {
		hi = max(hi, p.Ask(g.Name))
	}
	return hi
}

// schedNode is a member's record as an empty scheduler node.
func schedNode(id string, r *mesh.Record) scheduler.Node {
	inv := r.Inventory
	n := scheduler.Node{
		ID:              id,
		CPUCapacity:     int64(inv.Host.CPUCores) * 1000,
		MemoryCapacity:  inv.Host.MemoryTotalBytes,
		DiskBytes:       inv.Host.DiskFreeBytes >> 30 << 30,
		PricePerGPUHour: nodePrice(r.Price, inv.GPUs),
	}
	n.CPUMilli, n.MemoryBytes = n.CPUCapacity, n.MemoryCapacity
	for _, g := range inv.GPUs {
		n.GPUs = append(n.GPUs, scheduler.GPU{
			UUID: g.UUID, Model: g.Name, Arch: strings.ToLower(g.Architecture),
			Compute: parseCompute(g.ComputeCapability), VRAM: g.VRAMTotalBytes,
			FreeMilli: scheduler.MilliPerGPU, FreeVRAM: g.VRAMTotalBytes,
		})
	}
	for _, m := range r.Models {
		n.Models = append(n.Models, m.ID)
		if m.Name != "" {
			n.Models = append(n.Models, m.Name)
		}
	}
	return n
}

func parseCompute(s string) scheduler.ComputeCapability {
	maj, minor, _ := strings.Cut(s, ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil || a < 0 || b < 0 {
		return scheduler.ComputeCapability{}
	}
	return scheduler.ComputeCapability{Major: a, Minor: b}
}

func fromMeshFree(f mesh.FreeCapacity) coordinator.Free {
	out := coordinator.Free{CPUMilli: f.CPUMilli, MemoryBytes: f.MemoryBytes, DiskBytes: f.DiskBytes}
	for _, g := range f.GPUs {
		out.GPUs = append(out.GPUs, coordinator.GPUFree{UUID: g.UUID, Milli: g.Milli, VRAMBytes: g.VRAMBytes})
	}
	return out
}

// applyFree overlays announced free capacity on a record's node.
func applyFree(n *scheduler.Node, f coordinator.Free) {
	by := map[string]coordinator.GPUFree{}
	for _, g := range f.GPUs {
		by[g.UUID] = g
	}
	for i, g := range n.GPUs {
		if x, ok := by[g.UUID]; ok {
			n.GPUs[i].FreeMilli = int(min(max(x.Milli, 0), scheduler.MilliPerGPU))
			n.GPUs[i].FreeVRAM = uint64(min(max(x.VRAMBytes, 0), int64(g.VRAM)))
		}
	}
	n.CPUMilli = min(max(f.CPUMilli, 0), n.CPUCapacity)
	n.MemoryBytes = uint64(min(max(f.MemoryBytes, 0), int64(n.MemoryCapacity)))
	n.DiskBytes = uint64(max(f.DiskBytes, 0))
}

// routes serves the deployment and ledger endpoints in front of next.
func (s *deployService) routes(next http.Handler) http.Handler {
	if s == nil {
		return next
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/deployments", s.handleSubmit)
	mux.HandleFunc("GET /v1/deployments", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.list()) })
	mux.HandleFunc("GET /v1/deployments/{name}", s.handleGet)
	mux.HandleFunc("DELETE /v1/deployments/{name}", s.handleRemove)
	mux.HandleFunc("POST /v1/deployments/{name}/scale", s.handleScale)
	mux.HandleFunc("GET /v1/deployments/{name}/logs", s.handleLogs)
	mux.HandleFunc("GET /v1/ledger", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.led.view()) })
	mux.Handle("/", next)
	return mux
}

func (s *deployService) handleSubmit(w http.ResponseWriter, r *http.Request) {
	var req DeployRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "deploy request: %v", err)
		return
	}
	d, err := s.submit(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

func (s *deployService) handleGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	rec, ok := s.store.Get(name)
	s.mu.Unlock()
	if !ok || rec.Spec.Deleted {
		writeError(w, http.StatusNotFound, "no deployment %q; `shoal ps` lists them", name)
		return
	}
	writeJSON(w, http.StatusOK, s.viewOf(rec))
}

func (s *deployService) handleRemove(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	d, err := s.remove(name)
	if errors.Is(err, coordinator.ErrUnknownDeployment) {
		writeError(w, http.StatusNotFound, "no deployment %q; `shoal ps` lists them", name)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// startDeploy starts the deployment service over m; a mesh that cannot
// carry streams (a test fake) gets none, and the daemon runs without
// deployments.
func (d *Daemon) startDeploy(home string, log *slog.Logger, m meshNode, inv hardware.Inventory, act *activity, met coordinator.Metrics) (*deployService, error) {
	st, ok := m.(streams)
	if !ok {
		return nil, nil
	}
	ann, _ := m.(freeAnnouncer)
	return newDeployService(deployConfig{
		Self: m.ID(), Home: home, Version: d.cfg.Version, Members: m, Streams: st,
		Announce: ann, Inv: inv, Clock: d.cfg.Clock, Log: log, Activity: act,
		Coordinator: coordinator.Config{Metrics: met},
	})
}

// deploymentsFile is the persisted form of the records.
type deploymentsFile struct {
	Records []coordinator.Record `json:"records"`
}

// loadRecords reads the records saved by the last run; they merge with
// what the other members push like any other copy.
func (s *deployService) loadRecords() {
	path := filepath.Join(s.cfg.Home, DeploymentsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var f deploymentsFile
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil {
		s.log.Warn("ignoring unreadable deployments file; the other members will send their copies", "file", path, "err", err)
		return
	}
	s.merge(f.Records)
	s.mu.Lock()
	s.dirty = false
	s.mu.Unlock()
}

// saveRecords writes the records when they changed since the last save.
func (s *deployService) saveRecords() {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return
	}
	s.dirty = false
	b, err := json.Marshal(deploymentsFile{Records: s.store.List()})
	s.mu.Unlock()
	if err == nil {
		path := filepath.Join(s.cfg.Home, DeploymentsFile)
		if err = os.WriteFile(path+".tmp", b, 0o600); err == nil {
			err = os.Rename(path+".tmp", path)
		}
	}
	if err != nil {
		s.log.Warn("could not save the deployment records", "err", err)
	}
}
