package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Clock is the time a Supervisor sees; tests pass a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// SupervisorConfig says how hard a Supervisor tries.
type SupervisorConfig struct {
	// MaxRestarts is how many failed starts or crashes in a row are
	// tolerated; the next one is a crash loop and the replica is given up
	// (state failed). Default 5.
	MaxRestarts int
	// BackoffFirst is the wait before the first restart, doubling each time
	// up to BackoffMax. Defaults 1 s and 1 min.
	BackoffFirst, BackoffMax time.Duration
	// StableAfter: a replica that ran healthy this long has its crash count
	// reset. Default 10 min.
	StableAfter time.Duration
	// StopGrace is handed to Backend.Stop; default 10 s.
	StopGrace time.Duration
	// Clock; nil means the system clock.
	Clock Clock
	// OnPhase, when set, is called on Run's goroutine after each phase
	// change, so a caller learns of readiness without polling Status. It
	// must not block.
	OnPhase func(Phase)
}

func (c *SupervisorConfig) validate() {
	if c.MaxRestarts <= 0 {
		c.MaxRestarts = 5
	}
	if c.BackoffFirst <= 0 {
		c.BackoffFirst = time.Second
	}
	if c.BackoffMax < c.BackoffFirst {
		c.BackoffMax = max(time.Minute, c.BackoffFirst)
	}
	if c.StableAfter <= 0 {
		c.StableAfter = 10 * time.Minute
	}
	if c.StopGrace <= 0 {
		c.StopGrace = defaultStopGrace
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
}

// Phase is where a supervised replica is.
type Phase string

// Phases.
const (
	PhaseStarting Phase = "starting"
	PhaseReady    Phase = "ready"
	PhaseBackoff  Phase = "backoff" // crashed; waiting to restart
	PhaseFailed   Phase = "failed"  // crash loop: given up, nothing left running
	PhaseStopped  Phase = "stopped"
)

// Status is a supervised replica's visible state.
type Status struct {
	Phase    Phase     `json:"phase"`
	Replica  Replica   `json:"replica"`
	Restarts int       `json:"restarts"`          // crashes in a row
	Adopted  bool      `json:"adopted,omitempty"` // the running replica was adopted, not started by Run
	LastErr  string    `json:"last_error"`        // why the last start or run ended
	NextTry  time.Time `json:"next_try,omitzero"` // in backoff: when
	// StartedAt is when the current replica's start (or adoption) began,
	// ReadyAt when it was found healthy (zero until then).
	StartedAt time.Time `json:"started_at,omitzero"`
	ReadyAt   time.Time `json:"ready_at,omitzero"`
}

// Supervisor keeps one replica running: start until healthy, restart with
// exponential backoff when it exits, and after MaxRestarts failures in a row
// give up in PhaseFailed, with the replica removed (its GPUs are free).
// Run is synchronous; the caller owns the goroutine it runs on.
type Supervisor struct {
	b    Backend
	spec Spec
	cfg  SupervisorConfig

	mu     sync.Mutex
	status Status
	adopt  *Replica // found running by a restarted daemon; Run takes it over
}

// NewSupervisor returns a supervisor of spec on b.
func NewSupervisor(b Backend, spec Spec, cfg SupervisorConfig) *Supervisor {
	cfg.validate()
	return &Supervisor{b: b, spec: spec, cfg: cfg, status: Status{Phase: PhaseStarting}}
}

// Adopt hands Run a replica of this spec that is already running (left by
// an earlier daemon and found through Backend.List): Run first checks that
// it answers its health path within adoptHealthWait and then supervises it
// as if it had started it, without a restart. One that does not answer is
// removed and started afresh. Call it before Run.
func (s *Supervisor) Adopt(r Replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.adopt = &r
}

// adoptHealthWait bounds the health check of an adopted replica: it was
// healthy before the daemon went, so it answers at once or is broken.
const adoptHealthWait = 5 * time.Second

// takeAdopted returns the replica handed to Adopt, once.
func (s *Supervisor) takeAdopted() *Replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.adopt
	s.adopt = nil
	return r
}

// start adopts the replica handed to Adopt when it is healthy, and
// otherwise starts one.
func (s *Supervisor) start(ctx context.Context) (Replica, bool, error) {
	if a := s.takeAdopted(); a != nil {
		err := WaitHealthy(ctx, s.b, *a, min(adoptHealthWait, s.spec.StartTimeout))
		if err == nil {
			r, err := s.b.Inspect(ctx, a.ID)
			if err == nil && r.State == StateRunning {
				return r, true, nil
			}
		}
		if ctx.Err() != nil {
			return Replica{}, false, ctx.Err()
		}
		// Broken or gone: replace it.
		s.b.Remove(ctx, a.ID)
	}
	r, err := StartHealthy(ctx, s.b, s.spec)
	return r, false, err
}

// Status returns the current state; safe to call while Run runs.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Supervisor) set(f func(*Status)) {
	s.mu.Lock()
	was := s.status.Phase
	f(&s.status)
	now := s.status.Phase
	s.mu.Unlock()
	if now != was && s.cfg.OnPhase != nil {
		s.cfg.OnPhase(now)
	}
}

// Run supervises until ctx ends (the replica is then removed; nil) or the
// replica crash-loops (ErrCrashLoop, wrapping the last failure).
func (s *Supervisor) Run(ctx context.Context) error {
	defer func() {
		// Nothing outlives Run: not on cancel, not on a crash loop.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StopGrace+30*time.Second)
		defer cancel()
		s.b.Stop(cctx, s.spec.ReplicaID, s.cfg.StopGrace)
		s.b.Remove(cctx, s.spec.ReplicaID)
	}()
	crashes := 0
	backoff := s.cfg.BackoffFirst
	for {
		startedAt := s.cfg.Clock.Now()
		s.set(func(st *Status) { st.Phase, st.StartedAt, st.ReadyAt = PhaseStarting, startedAt, time.Time{} })
		r, adopted, err := s.start(ctx)
		if ctx.Err() != nil {
			s.set(func(st *Status) { st.Phase = PhaseStopped })
			return nil
		}
		if err == nil {
			readyAt := s.cfg.Clock.Now()
			s.set(func(st *Status) { st.Phase, st.Replica, st.Adopted, st.ReadyAt = PhaseReady, r, adopted, readyAt })
			r, err = s.b.Wait(ctx, s.spec.ReplicaID)
			if ctx.Err() != nil {
				s.set(func(st *Status) { st.Phase = PhaseStopped })
				return nil
			}
			if err == nil {
				err = fmt.Errorf("%w: %s exited with status %d", ErrExited, s.spec.ReplicaID, r.ExitCode)
				if tail := LogTail(ctx, s.b, s.spec.ReplicaID, logTailBytes); tail != "" {
					err = fmt.Errorf("%w; its output ends:\n%s", err, tail)
				}
			}
			if s.cfg.Clock.Now().Sub(readyAt) >= s.cfg.StableAfter {
				crashes, backoff = 0, s.cfg.BackoffFirst
			}
			s.b.Remove(ctx, s.spec.ReplicaID)
		}
		if errors.Is(err, ErrInvalidSpec) || errors.Is(err, ErrUnknownMarker) || errors.Is(err, ErrImagePull) {
			// No restart fixes a spec, nor brings an image the engine
			// could not pull within its pull timeout.
			s.set(func(st *Status) { st.Phase, st.LastErr = PhaseFailed, err.Error() })
			return err
		}
		crashes++
		if crashes > s.cfg.MaxRestarts {
			err = fmt.Errorf("%w: %s failed %d times in a row: %w", ErrCrashLoop, s.spec.ReplicaID, crashes, err)
			s.set(func(st *Status) { st.Phase, st.LastErr, st.Restarts = PhaseFailed, err.Error(), crashes })
			return err
		}
		next := s.cfg.Clock.Now().Add(backoff)
		s.set(func(st *Status) {
			st.Phase, st.LastErr, st.Restarts, st.NextTry, st.Replica = PhaseBackoff, err.Error(), crashes, next, Replica{}
		})
		select {
		case <-ctx.Done():
			s.set(func(st *Status) { st.Phase = PhaseStopped })
			return nil
		case <-s.cfg.Clock.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.BackoffMax)
	}
}
