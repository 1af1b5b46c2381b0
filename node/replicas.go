package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
	"github.com/shoalmesh/shoal/weightcache"
)

// ReplicasDir holds the process backend's replica logs and state files.
const ReplicasDir = "replicas"

// replicaInterval: how often the runner compares the ledger's committed
// reservations with the replicas it runs, and looks at their phases. A
// commit or release on the ledger wakes it at once (ledgerServer.settled);
// the poll catches the rest (a deployment record that arrives after its
// reservation, phase changes of running replicas).
const replicaInterval = 200 * time.Millisecond

// weightsPatience: how long a replica keeps trying to find and fetch its
// model before it is failed (records and providers take a moment to reach
// a node that just joined).
const weightsPatience = 30 * time.Second

// Replica phases as the pool sees them (ReplicaRun.State).
const (
	PhaseStarting = "starting" // fetching weights, starting, or waiting for health
	PhaseReady    = "ready"
	PhaseBackoff  = "backoff"  // crashed; restarting after a pause
	PhaseFailed   = "failed"   // gave up; Reason says why
	PhaseStopping = "stopping" // its reservation is gone; being stopped and removed
)

// ReplicaRun is one replica a node runs, as it reports it to the pool.
type ReplicaRun struct {
	// Reservation is the ledger reservation the replica runs on.
	Reservation string `json:"reservation"`
	// ID is the replica's name in the runtime backend on its node.
	ID         string   `json:"id"`
	Deployment string   `json:"deployment"`
	Node       string   `json:"node"`
	State      string   `json:"state"`
	Reason     string   `json:"reason,omitempty"`
	GPUs       []string `json:"gpus,omitempty"`
	// InFlight is the requests the node's gateway has in flight on it.
	InFlight int `json:"in_flight"`
	// Backend runs it ("process" or "docker") and Ref is its process or
	// container ID there; empty until it is ready.
	Backend string `json:"backend,omitempty"`
	Ref     string `json:"ref,omitempty"`
	// Adopted: a restarted daemon found it running and took it over.
	Adopted bool `json:"adopted,omitempty"`
	// Start is how its start went, phase by phase; nil until it is ready.
	Start *StartTimings `json:"start,omitempty"`
	// Endpoint is the replica's loopback URL; only its own node uses it.
	Endpoint string `json:"-"`
}

// replicaRunner starts a replica on every committed reservation of this
// node's ledger whose deployment record it knows, supervises it, and stops
// and removes it once the reservation is released or expires. It owns one
// loop goroutine and one goroutine per replica; close stops and waits for
// them (the replicas are stopped and removed: a replica never outlives
// its reservation, nor the daemon).
type replicaRunner struct {
	self     string
	backend  runtime.Backend // the process backend
	rt       runtimes        // the Docker backend and the rule that picks one
	led      *ledgerServer
	record   func(dep string) (coordinator.Record, bool)
	weights  *weights // nil: templates with weights fail
	version  string
	sup      runtime.SupervisorConfig
	log      *slog.Logger
	onChange func() // a replica changed phase; must not block
	// onFailed learns of each replica that gave up, before its
	// reservation is released; must not block.
	onFailed func(replicaFailure)
	gang     *gangNet // connects gang members; nil: gangs do not start

	mu   sync.Mutex
	runs map[string]*replicaRun // by reservation ID
	// adopt are replicas the last run left running, by reservation ID,
	// until a run takes each over (or its reservation is found gone).
	adopt map[string]adoptee
	// failed are replicas that gave up, by reservation ID: their
	// reservations are released, and they stay listed (state failed, with
	// the reason) until their deployment is removed or deployed anew, or
	// for failedShown.
	failed map[string]failedRun

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// failedShown: how long a failed replica stays in the reports and `shoal
// ps` after its reservation was released.
const failedShown = 30 * time.Minute

type failedRun struct {
	run  ReplicaRun
	spec time.Time // the deployment spec's Updated it ran
	at   time.Time
}

type replicaRun struct {
	// gang is the member's place in its gang (nil for a service or job);
	// gangPort its loopback port, links its peers' (node/gang.go).
	gang     *gangMember
	gangPort int
	links    *gangLinks

	res    ledger.Reservation
	id     string
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	adopt    *adoptee        // left running by the last run; the run takes it over
	backend  runtime.Backend // runs it, once chosen
	sup      *runtime.Supervisor
	state    string
	reason   string
	ended    bool
	stopping bool
	// Cold-start timings: when the runner saw the committed reservation,
	// how long the weights took, and whether readiness was logged.
	seen        time.Time
	fetched     time.Duration
	readyLogged bool
}

func newReplicaRunner(r *replicaRunner) *replicaRunner {
	r.log = r.log.With("component", "replicas")
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// Replicas left running by a previous run of the daemon on a still
	// committed reservation are adopted; the others are removed.
	cctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	r.adopt = r.findLeftovers(cctx)
	cancel()
	r.wg.Add(1)
	go r.loop()
	return r
}

func (r *replicaRunner) close() {
	if r == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	r.dropAdoptees(nil) // still waiting for their deployment's record: they go with the daemon
	r.mu.Unlock()
	r.wg.Wait()
	r.rt.close()
}

func (r *replicaRunner) loop() {
	defer r.wg.Done()
	t := time.NewTicker(replicaInterval)
	defer t.Stop()
	last := ""
	for {
		r.reconcile()
		if sig := r.signature(); sig != last {
			last = sig
			if r.onChange != nil {
				r.onChange()
			}
		}
		select {
		case <-r.ctx.Done():
			r.mu.Lock()
			runs := make([]*replicaRun, 0, len(r.runs))
			for _, ru := range r.runs {
				runs = append(runs, ru)
			}
			r.mu.Unlock()
			for _, ru := range runs {
				<-ru.done
			}
			return
		case <-t.C:
		case <-r.led.settled:
		}
	}
}

// reconcile starts replicas on new committed reservations and stops those
// whose reservation is gone.
func (r *replicaRunner) reconcile() {
	want := map[string]ledger.Reservation{}
	committed := map[string]bool{}
	for _, res := range r.led.view().Reservations {
		if res.State != ledger.StateCommitted {
			continue
		}
		committed[res.ID] = true
		if rec, ok := r.record(res.Deployment); ok && !rec.Spec.Deleted {
			want[res.ID] = res
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, f := range r.failed {
		rec, ok := r.record(f.run.Deployment)
		if !ok || rec.Spec.Deleted || !rec.Spec.Updated.Equal(f.spec) || time.Since(f.at) > failedShown {
			delete(r.failed, id)
		}
	}
	for id, ru := range r.runs {
		if _, ok := want[id]; ok {
			continue
		}
		ru.cancel()
		ru.mu.Lock()
		ru.stopping = true
		ru.mu.Unlock()
		select {
		case <-ru.done:
			delete(r.runs, id)
		default:
		}
	}
	for id, res := range want {
		if _, ok := r.runs[id]; ok {
			continue
		}
		if _, ok := r.failed[id]; ok {
			continue // gave up; its release is on the way
		}
		rec, _ := r.record(res.Deployment)
		gm, start := r.gangMemberOf(rec, res)
		if !start {
			continue // a gang starts once every member is committed
		}
		ctx, cancel := context.WithCancel(r.ctx)
		ru := &replicaRun{res: res, id: runtimeID(res), cancel: cancel, done: make(chan struct{}), state: PhaseStarting, seen: time.Now(), gang: gm}
		if a, ok := r.adopt[id]; ok {
			ru.adopt = &a
			delete(r.adopt, id)
		}
		r.runs[id] = ru
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer close(ru.done)
			r.run(ctx, ru, rec)
		}()
	}
	r.dropAdoptees(committed)
}

// run prepares and supervises one replica until ctx ends or it fails.
func (r *replicaRunner) run(ctx context.Context, ru *replicaRun, rec coordinator.Record) {
	fail := func(err error) {
		reason := failureReason(err.Error())
		ru.mu.Lock()
		ru.state, ru.reason, ru.ended = PhaseFailed, reason, true
		ru.mu.Unlock()
		r.log.Warn("replica failed", "replica", ru.id, "deployment", rec.ID, "err", err)
		r.giveUp(ru, rec, reason)
	}
	defer r.dropUnadopted(ru)
	defer func() { ru.links.close() }()
	placedAt := time.Now()
	spec, model, err := r.spec(rec, ru)
	if err != nil {
		fail(err)
		return
	}
	var fetched time.Duration
	if model != "" {
		if r.weights == nil {
			fail(fmt.Errorf("%w: the deployment needs model %q and this node has no weight cache", runtime.ErrInvalidSpec, model))
			return
		}
		ru.mu.Lock()
		ru.reason = fetchingReason + model
		ru.mu.Unlock()
		id, dir, err := r.weights.ensure(ctx, model)
		// A model named in a record that has not reached this node yet, or
		// whose holders are not reachable yet, may be there in a moment.
		for wait := 250 * time.Millisecond; err != nil && time.Since(placedAt) < weightsPatience && ctx.Err() == nil; wait = min(2*wait, 4*time.Second) {
			ru.mu.Lock()
			ru.reason = fmt.Sprintf("waiting for weights %s: %v", model, err)
			ru.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			id, dir, err = r.weights.ensure(ctx, model)
		}
		if err != nil {
			if ctx.Err() == nil {
				fail(fmt.Errorf("weights %s: %w", model, err))
			}
			return
		}
		defer r.weights.unpin(id)
		spec.ModelDir = dir
		fetched = time.Since(placedAt)
	}
	be, err := r.rt.pick(ctx, r.backend, &spec, ru.res.ID)
	if err != nil {
		fail(err)
		return
	}
	sup := r.supervisor(ru, be, spec)
	ru.mu.Lock()
	ru.sup, ru.backend, ru.reason, ru.fetched = sup, be, "", fetched
	ru.mu.Unlock()
	r.log.Info("starting replica", "replica", ru.id, "deployment", rec.ID, "reservation", ru.res.ID, "fetch", fetched)
	if err := sup.Run(ctx); err != nil {
		fail(err)
		return
	}
	ru.mu.Lock()
	ru.ended = true
	ru.mu.Unlock()
	r.log.Info("replica stopped", "replica", ru.id, "deployment", rec.ID)
}

// giveUp keeps a failed replica listed, tells the pool (through onFailed
// and the next serving report), then releases its reservation in this
// node's ledger, the source of truth for its capacity: the GPU is free at
// once, and the coordinator, which learns of the release at its next
// renewal or resync, places the replica again (elsewhere, see scaling).
func (r *replicaRunner) giveUp(ru *replicaRun, rec coordinator.Record, reason string) {
	x := ReplicaRun{Reservation: ru.res.ID, ID: ru.id, Deployment: ru.res.Deployment, Node: r.self, State: PhaseFailed, Reason: reason}
	for _, g := range ru.res.Claim.GPUs {
		x.GPUs = append(x.GPUs, g.UUID)
	}
	r.mu.Lock()
	if r.failed == nil {
		r.failed = map[string]failedRun{}
	}
	r.failed[ru.res.ID] = failedRun{run: x, spec: rec.Spec.Updated, at: time.Now()}
	r.mu.Unlock()
	if r.onFailed != nil {
		r.onFailed(replicaFailure{Deployment: x.Deployment, Node: r.self, Reservation: x.Reservation, Reason: reason, At: time.Now()})
	}
	if r.onChange != nil {
		r.onChange()
	}
	r.led.serve(coordinator.Call{Op: coordinator.OpRelease, IDs: []string{ru.res.ID}})
	r.log.Info("released the reservation of a failed replica", "replica", ru.id, "deployment", rec.ID, "reservation", ru.res.ID)
}

// spec renders the deployment's template into what the backend runs on
// ru's reservation, and names the model it needs ("" for none).
func (r *replicaRunner) spec(rec coordinator.Record, ru *replicaRun) (runtime.Spec, string, error) {
	ts, err := renderRecord(rec, r.version)
	if err != nil {
		return runtime.Spec{}, "", fmt.Errorf("%w: %w", runtime.ErrInvalidSpec, err)
	}
	s, err := r.memberSpec(ts, ru, rec.ID)
	if err != nil {
		return runtime.Spec{}, "", fmt.Errorf("%w: %w", runtime.ErrInvalidSpec, err)
	}
	for _, g := range ru.res.Claim.GPUs {
		s.GPUUUIDs = append(s.GPUUUIDs, g.UUID)
		if g.Milli < 1000 && g.VRAMBytes > 0 {
			s.VRAMLimitMiB = g.VRAMBytes >> 20
		}
	}
	if len(s.Command) > 0 {
		s.Command[0] = findCommand(s.Command[0])
	}
	model := ""
	if ts.Weights != nil {
		model = ts.Weights.Model
	}
	return s, model, nil
}

// findCommand looks for a bare command name next to this executable
// first (bin/shoal-reference beside bin/shoal), then leaves it to PATH.
func findCommand(name string) string {
	if strings.ContainsRune(name, os.PathSeparator) {
		return name
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return name
}

// runtimeID names a reservation's replica in the backend: the deployment
// (shortened) and a hash of the reservation ID, within [a-zA-Z0-9_.-]{1,64}.
func runtimeID(res ledger.Reservation) string {
	sum := sha256.Sum256([]byte(res.ID))
	dep := res.Deployment
	if len(dep) > 40 {
		dep = dep[:40]
	}
	return dep + "-" + hex.EncodeToString(sum[:8])
}

// list is every replica this node runs, by reservation ID.
func (r *replicaRunner) list() []ReplicaRun {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ReplicaRun, 0, len(r.runs)+len(r.failed))
	for _, f := range r.failed {
		out = append(out, f.run)
	}
	for id, ru := range r.runs {
		if _, ok := r.failed[id]; ok {
			continue
		}
		x := ReplicaRun{Reservation: ru.res.ID, ID: ru.id, Deployment: ru.res.Deployment, Node: r.self}
		for _, g := range ru.res.Claim.GPUs {
			x.GPUs = append(x.GPUs, g.UUID)
		}
		ru.mu.Lock()
		x.State, x.Reason, x.Backend = ru.state, ru.reason, backendName(ru.backend)
		if ru.stopping {
			x.State, x.Reason = PhaseStopping, ""
		} else if ru.sup != nil && !ru.ended {
			st := ru.sup.Status()
			switch st.Phase {
			case runtime.PhaseReady:
				x.State, x.Endpoint = PhaseReady, st.Replica.Endpoint
				x.Ref, x.Adopted, x.Start = st.Replica.Ref, st.Adopted, ru.timings(st)
				if !ru.readyLogged {
					ru.readyLogged = true
					r.log.Info("replica ready", "replica", ru.id, "deployment", ru.res.Deployment, "backend", x.Backend,
						"ref", shortRef(x.Ref), "adopted", x.Adopted, "endpoint", x.Endpoint, "weights", ru.fetched,
						"start", st.ReadyAt.Sub(st.StartedAt), "committed_to_ready", st.ReadyAt.Sub(ru.seen))
				}
			case runtime.PhaseBackoff:
				x.State, x.Reason = PhaseBackoff, failureReason(st.LastErr)
			case runtime.PhaseFailed:
				x.State, x.Reason = PhaseFailed, failureReason(st.LastErr)
			default:
				x.State = PhaseStarting
			}
		}
		ru.mu.Unlock()
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b ReplicaRun) int { return strings.Compare(a.Reservation, b.Reservation) })
	return out
}

// logs writes the output of this node's replicas of dep to w, each after
// a header line, and returns how many it wrote.
func (r *replicaRunner) logs(ctx context.Context, dep string, w io.Writer) int {
	n := 0
	for _, x := range r.list() {
		if x.Deployment != dep {
			continue
		}
		n++
		fmt.Fprintf(w, "== replica %s (%s) ==\n", x.ID, x.State)
		be := r.rt.byName(r.backend, x.Backend)
		if be == nil {
			be = r.backend
		}
		rc, err := be.Logs(ctx, x.ID)
		if err != nil {
			fmt.Fprintf(w, "(no output: %v)\n", err)
			continue
		}
		_, _ = io.Copy(w, io.LimitReader(rc, 16<<20))
		rc.Close()
	}
	return n
}

// signature changes whenever a replica appears, goes or changes phase.
func (r *replicaRunner) signature() string {
	var b strings.Builder
	for _, x := range r.list() {
		b.WriteString(x.Reservation + "=" + x.State + "@" + x.Endpoint + ";")
	}
	return b.String()
}

// ensure makes model ref complete in the store (from the pool when it is
// not), pins it for a replica and returns its ID and read-only directory.
func (w *weights) ensure(ctx context.Context, ref string) (id, dir string, err error) {
	id, _, err = w.resolvePool(ref)
	if err != nil {
		return "", "", err
	}
	if info, err := w.store.Stat(id); err != nil || info.State != weightcache.StateComplete {
		if _, err := w.fetch.Fetch(ctx, id, nil); err != nil {
			return "", "", err
		}
		w.changed()
	}
	if err := w.store.Pin(id); err != nil {
		return "", "", err
	}
	dir, err = w.store.Path(id)
	if err != nil {
		w.unpin(id)
		return "", "", err
	}
	return id, dir, nil
}

func (w *weights) unpin(id string) {
	if err := w.store.Unpin(id); err != nil && !errors.Is(err, weightcache.ErrNotFound) {
		w.log.Warn("could not unpin a model", "id", id, "err", err)
	}
}
