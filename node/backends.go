package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/runtime"
)

// ErrRuntime: the runtime asked for (Config.Runtime) cannot run here, or
// cannot run a deployment's template.
var ErrRuntime = errors.New("node: runtime")

// enginePing bounds the Docker engine's answer at start.
const enginePing = 3 * time.Second

// runtimes are what a replica runner needs beyond its process backend: the
// Docker backend when there is one, the rule that picks a backend for each
// replica (Config.Runtime), and what every replica is labelled with. The
// zero value runs every replica as a process.
type runtimes struct {
	mode     string          // RuntimeAuto, RuntimeProcess, RuntimeDocker; "" is auto
	docker   *runtime.Docker // nil: no engine (or process mode)
	pool     string          // the pool's ID, a label of every replica
	declared map[string]bool // GPU UUIDs the operator declared (no device behind them)
	summary  string          // which backend is in use and why, for `shoal status`
}

// openRuntimes opens the backends of mode for the node owner of pool: the
// process backend (always: it holds HOME/replicas) and, unless mode is
// process, a Docker engine. RuntimeDocker without an engine is an error;
// RuntimeAuto without one runs processes and says so.
func openRuntimes(ctx context.Context, mode, home, owner, pool string, declared []hardware.GPU, log *slog.Logger) (*runtime.Process, runtimes, error) {
	be, err := runtime.NewProcess(runtime.ProcessConfig{Dir: filepath.Join(home, ReplicasDir), Owner: owner})
	if err != nil {
		return nil, runtimes{}, err
	}
	rt := runtimes{mode: mode, pool: pool, declared: map[string]bool{}}
	for _, g := range hardware.AssignDeclared(declared, owner) {
		rt.declared[g.UUID] = true
	}
	if mode == RuntimeProcess {
		rt.summary = "process (--runtime process)"
		return be, rt, nil
	}
	pctx, cancel := context.WithTimeout(ctx, enginePing)
	defer cancel()
	d, err := runtime.NewDocker(pctx, runtime.DockerConfig{Owner: owner})
	switch {
	case err != nil && mode == RuntimeDocker:
		return nil, runtimes{}, fmt.Errorf("%w: --runtime docker, but no Docker engine answers (is dockerd running, and DOCKER_HOST right?): %w", ErrRuntime, err)
	case err != nil:
		rt.summary = "process (auto: no Docker engine answers)"
		log.Info("replicas run as processes: no Docker engine answers", "err", err)
		return be, rt, nil
	}
	rt.docker = d
	engine := d.Engine(pctx)
	if mode == RuntimeDocker {
		rt.summary = "docker (--runtime docker; " + engine + ")"
	} else {
		rt.summary = "auto: " + engine + " answers; templates with an image run in containers, the rest as processes"
	}
	log.Info("replica runtime", "runtime", mode, "engine", engine)
	return be, rt, nil
}

func (rt *runtimes) close() {
	if rt.docker != nil {
		rt.docker.Close()
	}
}

// pick chooses the backend that runs s (one of process and rt.docker),
// after labelling s with the pool and the reservation it runs on.
func (rt *runtimes) pick(ctx context.Context, process runtime.Backend, s *runtime.Spec, reservation string) (runtime.Backend, error) {
	s.Labels = map[string]string{runtime.LabelPool: rt.pool, runtime.LabelReservation: reservation}
	for _, u := range s.GPUUUIDs {
		if rt.declared[u] {
			s.DeclaredGPUs = true
		}
	}
	// A gang member (memberSpec sets its rank) reaches its peers through
	// links that listen on the host's loopback (node/gang.go), which a
	// container on Docker's bridge network cannot reach: gang members run
	// as processes, whatever the runtime, or fail saying why.
	if _, gang := s.Env[EnvGangRank]; gang {
		if len(s.Command) == 0 || rt.mode == RuntimeDocker {
			return nil, fmt.Errorf("%w: deployment %s is a gang, and gang members run only as processes (a container on Docker's bridge network cannot reach the gang's links on the host's loopback); give its template a command and run this node with --runtime auto or process", ErrRuntime, s.Deployment)
		}
		return process, nil
	}
	switch rt.mode {
	case RuntimeProcess:
		if len(s.Command) == 0 {
			return nil, fmt.Errorf("%w: deployment %s: its template names only an image (%s) and this node runs processes (--runtime process)", ErrRuntime, s.Deployment, s.Image)
		}
		return process, nil
	case RuntimeDocker:
		if s.Image == "" {
			return nil, fmt.Errorf("%w: deployment %s: its template names no image and this node runs containers (--runtime docker)", ErrRuntime, s.Deployment)
		}
		return rt.docker, nil
	}
	if rt.docker == nil || s.Image == "" {
		if len(s.Command) == 0 {
			return nil, fmt.Errorf("%w: deployment %s: its template names only an image (%s) and no Docker engine answers on this node", ErrRuntime, s.Deployment, s.Image)
		}
		return process, nil
	}
	if len(s.Command) > 0 {
		// Both ways are open: a container only when its image is here
		// already (no pull from a registry that may not exist).
		if ok, err := rt.docker.HasImage(ctx, s.Image); err != nil || !ok {
			return process, nil
		}
	}
	return rt.docker, nil
}

// byName is the backend a replica listed as running on name ("process",
// "docker") runs on; nil when this node has none of that name.
func (rt *runtimes) byName(process runtime.Backend, name string) runtime.Backend {
	if name == "docker" {
		if rt.docker == nil {
			return nil
		}
		return rt.docker
	}
	return process
}

// adoptee is a replica a previous run of the daemon left running on a
// reservation that is still committed: the runner takes it over instead
// of starting another.
type adoptee struct {
	backend runtime.Backend
	replica runtime.Replica
}

// findLeftovers sorts the replicas a previous run of the daemon left: a
// running one whose reservation (label) is still committed in the ledger
// and whose ID is the one that reservation gives is kept for adoption;
// every other one is removed.
func (r *replicaRunner) findLeftovers(ctx context.Context) map[string]adoptee {
	committed := map[string]string{} // reservation ID → runtime ID
	for _, res := range r.led.view().Reservations {
		if res.State == ledger.StateCommitted {
			committed[res.ID] = runtimeID(res)
		}
	}
	out := map[string]adoptee{}
	backends := []runtime.Backend{r.backend}
	if r.rt.docker != nil {
		backends = append(backends, r.rt.docker)
	}
	for _, be := range backends {
		old, err := be.List(ctx)
		if err != nil {
			r.log.Warn("could not list the replicas left by the last run", "err", err)
			continue
		}
		for _, x := range old {
			res := x.Labels[runtime.LabelReservation]
			if id, ok := committed[res]; ok && id == x.ID && x.State == runtime.StateRunning {
				if _, dup := out[res]; !dup {
					r.log.Info("adopting a replica left running by the last run", "replica", x.ID, "deployment", x.Deployment,
						"backend", x.Backend, "ref", shortRef(x.Ref), "endpoint", x.Endpoint)
					out[res] = adoptee{backend: be, replica: x}
					continue
				}
			}
			r.log.Info("removing a replica left by the last run", "replica", x.ID, "deployment", x.Deployment, "backend", x.Backend, "state", x.State)
			_ = be.Remove(ctx, x.ID)
		}
	}
	return out
}

// dropAdoptees removes the replicas kept for adoption whose reservation
// is not in committed, or whose deployment is deleted (nil: all of them);
// the caller holds r.mu. A committed reservation whose deployment record
// has not arrived yet keeps its replica waiting.
func (r *replicaRunner) dropAdoptees(committed map[string]bool) {
	for id, a := range r.adopt {
		if committed[id] {
			if rec, ok := r.record(a.replica.Deployment); !ok || !rec.Spec.Deleted {
				continue
			}
		}
		delete(r.adopt, id)
		r.log.Info("removing a replica left by the last run that no run took over", "replica", a.replica.ID, "deployment", a.replica.Deployment)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), time.Minute)
			defer cancel()
			_ = a.backend.Remove(ctx, a.replica.ID)
		}()
	}
}

func shortRef(ref string) string {
	if len(ref) > 12 && !strings.ContainsAny(ref, "/:") {
		return ref[:12]
	}
	return ref
}

// supervisor returns the supervisor of ru's replica on be: it tells the
// runner's onChange of every phase change (a ready replica reaches the
// gateways without waiting for the next reconcile), and takes over the
// replica the last run left, when it runs on be.
func (r *replicaRunner) supervisor(ru *replicaRun, be runtime.Backend, spec runtime.Spec) *runtime.Supervisor {
	cfg := r.sup
	if r.onChange != nil {
		cfg.OnPhase = func(runtime.Phase) { r.onChange() }
	}
	sup := runtime.NewSupervisor(be, spec, cfg)
	ru.mu.Lock()
	a := ru.adopt
	if a != nil && a.backend == be {
		sup.Adopt(a.replica)
		ru.adopt = nil
	}
	ru.mu.Unlock()
	r.dropUnadopted(ru) // left on another backend than the one now chosen
	return sup
}

// dropUnadopted removes the replica ru was to take over when the run did
// not hand it to a supervisor.
func (r *replicaRunner) dropUnadopted(ru *replicaRun) {
	ru.mu.Lock()
	a := ru.adopt
	ru.adopt = nil
	ru.mu.Unlock()
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), time.Minute)
	defer cancel()
	r.log.Info("removing a replica left by the last run", "replica", a.replica.ID, "deployment", a.replica.Deployment)
	_ = a.backend.Remove(ctx, a.replica.ID)
}

// StartTimings are the phases of a replica's start as its node measured
// them, on that node's clock.
type StartTimings struct {
	// Reserved is when the ledger admitted the reservation (its
	// coordinator commits it a round trip later); Seen is when the
	// runner took the committed reservation up.
	Reserved time.Time `json:"reserved"`
	Seen     time.Time `json:"seen"`
	// WeightsMillis is making the model local: a fetch from the pool when
	// it was missing, a pin when it was there.
	WeightsMillis float64 `json:"weights_ms"`
	// StartMillis is the backend's start (process or container) until the
	// health path answered; for an adopted replica, the health check.
	StartMillis float64 `json:"start_ms"`
	// Ready is when the replica was found healthy.
	Ready time.Time `json:"ready"`
}

// timings are ru's start timings once its supervisor saw it ready; the
// caller holds ru.mu.
func (ru *replicaRun) timings(st runtime.Status) *StartTimings {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return &StartTimings{
		Reserved:      ru.res.Since,
		Seen:          ru.seen,
		WeightsMillis: ms(ru.fetched),
		StartMillis:   ms(st.ReadyAt.Sub(st.StartedAt)),
		Ready:         st.ReadyAt,
	}
}

// backendName is the name ReplicaRun.Backend gives be; "" for none yet.
func backendName(be runtime.Backend) string {
	switch be.(type) {
	case nil:
		return ""
	case *runtime.Docker:
		return "docker"
	default:
		return "process"
	}
}

// runtime says which backend the node's replicas run on, and why.
func (p *servingParts) runtime() string {
	if p == nil || p.runner == nil {
		return ""
	}
	return p.runner.rt.summary
}
