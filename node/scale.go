package node

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/runtime/gateway"
	"github.com/shoalmesh/shoal/runtime/template"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// stepHook shapes the records a coordinator step sees and the statuses it
// writes. before may change recs (they are this step's copies); after
// may change the updates before they are written.
type stepHook interface {
	before(recs []coordinator.Record, now time.Time)
	after(ups []coordinator.Update, now time.Time)
}

// scaling is the node's policy around the coordinator's steps: failed
// replicas (the nodes to avoid, and when to give up) and the autoscaler of
// each deployment this member coordinates.
//
// Why here, around the coordinator, rather than inside it or on the
// gateways: the coordinator is a placement engine that honours a desired
// count (scale to zero already lowers Request.Replicas before Step the
// same way), and the inputs — serving reports with every node's failed
// replicas, in-flight requests and waiting requests — arrive at every
// member, so whichever member rendezvous hashing makes the coordinator
// has them, after a takeover too. Running the autoscaler on the
// coordinating member alone gives one writer of the count; it writes
// through the record path `shoal scale` uses, so every member sees the
// count and `shoal ps` shows it.
//
// Safe for concurrent use: notes arrive from the stream handlers, the
// hooks run on the deployment loop.
type scaling struct {
	dep  *deployService
	load func(dep string) (concurrency float64, ready int) // the pool's load on dep
	log  *slog.Logger

	mu       sync.Mutex
	book     *failureBook
	verdicts map[string]failureVerdict // of the step under way
	scalers  map[string]*depScaler
	params   map[string]scaleParams // by template key
}

var _ stepHook = (*scaling)(nil)

// depScaler is the autoscaler of one deployment this member coordinates.
type depScaler struct {
	a      *gateway.Autoscaler
	key    string // the params it was built from
	bucket int64  // last second sampled
	last   gateway.Decision
}

// scaleParams are the scaling settings of a deployment's template.
type scaleParams struct {
	auto     bool // a service with room between its replica bounds
	cfg      gateway.AutoscalerConfig
	key      string
	minCount int
}

func newScaling(dep *deployService, pol failurePolicy, load func(string) (float64, int), log *slog.Logger) *scaling {
	return &scaling{
		dep: dep, load: load, log: log.With("component", "scaling"),
		book: newFailureBook(pol), verdicts: map[string]failureVerdict{},
		scalers: map[string]*depScaler{}, params: map[string]scaleParams{},
	}
}

// noteFailure records a failed replica; a new one wakes the coordinator.
func (sc *scaling) noteFailure(f replicaFailure) {
	sc.mu.Lock()
	isNew := sc.book.note(f)
	sc.mu.Unlock()
	if isNew {
		sc.log.Info("replica failed", "deployment", f.Deployment, "node", f.Node, "reason", f.Reason)
		sc.dep.kick()
	}
}

func (sc *scaling) before(recs []coordinator.Record, now time.Time) {
	var ids []string
	for _, n := range sc.dep.view.Nodes() {
		ids = append(ids, n.ID)
	}
	owned := map[string]bool{}
	for i := range recs {
		r := &recs[i]
		if r.Spec.Deleted {
			continue
		}
		sc.mu.Lock()
		sc.book.reset(r.ID, r.Spec.Updated)
		v := sc.book.verdict(r.ID, now)
		sc.verdicts[r.ID] = v
		sc.mu.Unlock()
		if v.Failed {
			// Given up: every replica is released; the record says why.
			r.Spec.ScaleToZero, r.Spec.Request.Replicas = true, 0
			continue
		}
		r.Spec.Avoid = v.Avoid
		if coordinator.Owner(r.ID, ids) == sc.dep.self {
			owned[r.ID] = true
			sc.autoscale(r, now)
		}
	}
	sc.mu.Lock()
	for id := range sc.scalers {
		if !owned[id] {
			delete(sc.scalers, id)
		}
	}
	sc.mu.Unlock()
}

func (sc *scaling) after(ups []coordinator.Update, now time.Time) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for i := range ups {
		v := sc.verdicts[ups[i].ID]
		st := &ups[i].Status
		switch {
		case v.Failed:
			st.State, st.Reason, st.Closest, st.Detail = coordinator.StateFailed, v.Reason(), v.Last.Node, "redeploy it (shoal deploy) to try again"
		case len(v.Avoid) > 0 && st.State == coordinator.StateQueued:
			st.Reason, st.Closest = v.Reason(), v.Last.Node
		}
	}
	clear(sc.verdicts)
}

// autoscale feeds r's autoscaler one sample a second (the in-flight and
// waiting requests of the whole pool) and writes the count it decides.
func (sc *scaling) autoscale(r *coordinator.Record, now time.Time) {
	if r.Spec.Request.Gang {
		return
	}
	p, err := sc.paramsOf(*r)
	sc.mu.Lock()
	if err != nil || !p.auto {
		delete(sc.scalers, r.ID)
		sc.mu.Unlock()
		return
	}
	ds := sc.scalers[r.ID]
	if ds == nil || ds.key != p.key {
		cfg := p.cfg
		cfg.IdleTimeout = r.Spec.IdleTimeout
		a, err := gateway.NewAutoscaler(cfg)
		if err != nil {
			sc.mu.Unlock()
			sc.log.Warn("no autoscaler for a deployment", "deployment", r.ID, "err", err)
			return
		}
		ds = &depScaler{a: a, key: p.key}
		sc.scalers[r.ID] = ds
	}
	b := now.Unix()
	due := b != ds.bucket
	sc.mu.Unlock()
	if !due {
		return
	}
	conc, ready := sc.load(r.ID)
	sc.mu.Lock()
	ds.bucket = b
	ds.a.Record(gateway.Sample{At: now, Interval: time.Second, Concurrency: conc})
	d := ds.a.Desired(now, ready)
	ds.last = d
	sc.mu.Unlock()
	// Scale to zero stays with the idle timeout; the autoscaler moves the
	// count a deployment runs while it has traffic.
	n := max(d.Replicas, p.minCount, 1)
	if n == r.Spec.Request.Replicas {
		return
	}
	if rec, ok := sc.dep.setReplicas(r.ID, n); ok {
		sc.log.Info("autoscaled", "deployment", r.ID, "from", r.Spec.Request.Replicas, "to", n,
			"concurrency", conc, "stable", d.StableConcurrency, "panic", d.Panic, "ready", ready)
		avoid := r.Spec.Avoid
		r.Spec = rec.Spec
		r.Spec.Avoid = avoid
		r.SpecVersion = rec.SpecVersion
	}
}

// paramsOf renders r's template for its scaling section (cached by
// template, source and parameters).
func (sc *scaling) paramsOf(r coordinator.Record) (scaleParams, error) {
	var kb strings.Builder
	kb.WriteString(r.Spec.Template + "\x00" + r.Spec.Source)
	for _, k := range slices.Sorted(maps.Keys(r.Spec.Params)) {
		kb.WriteString("\x00" + k + "=" + r.Spec.Params[k])
	}
	key := kb.String()
	sc.mu.Lock()
	p, ok := sc.params[key]
	sc.mu.Unlock()
	if ok {
		return p, nil
	}
	spec, err := renderRecord(r, sc.dep.cfg.Version)
	if err != nil {
		return scaleParams{}, err
	}
	s := spec.Scaling
	window := time.Duration(s.Window)
	p = scaleParams{
		auto: spec.Kind == template.Service && s.MaxReplicas > max(1, s.MinReplicas),
		key:  key, minCount: s.MinReplicas,
		cfg: gateway.AutoscalerConfig{
			TargetConcurrency: float64(max(1, s.TargetConcurrency)),
			StableWindow:      window,
			PanicWindow:       max(time.Second, window/10),
			MinReplicas:       s.MinReplicas,
			MaxReplicas:       s.MaxReplicas,
			Granularity:       time.Second,
		},
	}
	sc.mu.Lock()
	if len(sc.params) > 256 {
		clear(sc.params)
	}
	sc.params[key] = p
	sc.mu.Unlock()
	return p, nil
}

// renderRecord renders the template a deployment record names.
func renderRecord(rec coordinator.Record, version string) (*template.Spec, error) {
	var t *template.Template
	var err error
	if rec.Spec.Source != "" {
		t, err = template.Parse([]byte(rec.Spec.Source))
	} else {
		var c *template.Catalog
		if c, err = template.Builtin(version); err == nil {
			t, err = c.Get(rec.Spec.Template)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", rec.Spec.Template, err)
	}
	return t.Render(rec.Spec.Params)
}

// setReplicas writes n as deployment name's replica count, as `shoal
// scale` does but keeping whether it scales to zero; it returns the record
// and whether it wrote.
func (s *deployService) setReplicas(name string, n int) (coordinator.Record, bool) {
	if n < 1 || n > coordinator.MaxReplicas {
		return coordinator.Record{}, false
	}
	s.mu.Lock()
	rec, ok := s.store.Get(name)
	if !ok || rec.Spec.Deleted || rec.Spec.Request.Gang || rec.Spec.Request.Replicas == n {
		s.mu.Unlock()
		return rec, false
	}
	spec := rec.Spec
	spec.Request.Replicas = n
	rec = s.store.Put(name, spec)
	s.dirty = true
	s.mu.Unlock()
	s.pushAll([]coordinator.Record{rec})
	return rec, true
}
