package gateway

import (
	"fmt"
	"math"
	"time"
)

// AutoscalerConfig is the scaling rule of one deployment. The fields come
// from the template's scaling section; zero means the default.
type AutoscalerConfig struct {
	// TargetConcurrency is the concurrent requests one replica should
	// carry; desired replicas = ceil(average concurrency / target).
	// Default 10.
	TargetConcurrency float64
	// StableWindow is the averaging window of normal operation: longer
	// rides out bursts, shorter follows load sooner. Default 60 s.
	StableWindow time.Duration
	// PanicWindow is the short window that detects a burst. Default 6 s.
	PanicWindow time.Duration
	// PanicThreshold: panic when the panic-window average needs more than
	// this many times the ready replicas. In panic the count only grows,
	// following the panic window, until a stable window passes without
	// the threshold being crossed. Default 2.
	PanicThreshold float64
	// IdleTimeout: after this long without traffic the deployment scales
	// to MinReplicas (zero by default), freeing its GPUs. Default 5 min.
	IdleTimeout time.Duration
	// MinReplicas and MaxReplicas bound the result; MaxReplicas 0 means no
	// bound.
	MinReplicas, MaxReplicas int
	// Granularity is the bucket of samples; samples of every gateway that
	// fall in one bucket add up. Match the gateways' ReportInterval.
	// Default 1 s.
	Granularity time.Duration
}

func (c *AutoscalerConfig) validate() error {
	if c.TargetConcurrency < 0 || c.StableWindow < 0 || c.PanicWindow < 0 || c.PanicThreshold < 0 ||
		c.IdleTimeout < 0 || c.MinReplicas < 0 || c.MaxReplicas < 0 || c.Granularity < 0 {
		return fmt.Errorf("%w: negative autoscaler setting", ErrConfig)
	}
	if c.TargetConcurrency == 0 {
		c.TargetConcurrency = 10
	}
	if c.StableWindow == 0 {
		c.StableWindow = 60 * time.Second
	}
	if c.PanicWindow == 0 {
		c.PanicWindow = 6 * time.Second
	}
	if c.PanicThreshold == 0 {
		c.PanicThreshold = 2
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.Granularity == 0 {
		c.Granularity = time.Second
	}
	if c.PanicWindow > c.StableWindow {
		return fmt.Errorf("%w: panic window %v longer than stable window %v", ErrConfig, c.PanicWindow, c.StableWindow)
	}
	if c.MaxReplicas > 0 && c.MinReplicas > c.MaxReplicas {
		return fmt.Errorf("%w: min replicas %d above max %d", ErrConfig, c.MinReplicas, c.MaxReplicas)
	}
	return nil
}

// Autoscaler turns concurrency samples into a desired replica count, as
// Knative's autoscaler does: the average over a stable window in normal
// operation, the average over a short panic window during a burst, and
// zero after an idle timeout. It is a deterministic state machine: time is
// what the caller passes in. Not safe for concurrent use.
type Autoscaler struct {
	cfg        AutoscalerConfig
	buckets    map[int64]float64 // bucket index → summed concurrency
	first      int64             // first bucket ever recorded; -1: none
	lastActive time.Time         // last sample with traffic
	panicking  bool
	panicSince time.Time // last time the threshold was crossed
	panicMax   int       // the count may not fall below this while panicking
}

// Decision is what Desired computed, with the inputs that led to it.
type Decision struct {
	Replicas          int
	Panic             bool
	Idle              bool    // no traffic for IdleTimeout (or ever)
	StableConcurrency float64 // average over the stable window
	PanicConcurrency  float64 // average over the panic window
}

// NewAutoscaler returns an autoscaler with no samples yet.
func NewAutoscaler(cfg AutoscalerConfig) (*Autoscaler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Autoscaler{cfg: cfg, buckets: map[int64]float64{}, first: -1}, nil
}

func (a *Autoscaler) bucket(t time.Time) int64 { return t.UnixNano() / int64(a.cfg.Granularity) }

// Record adds a gateway's sample; samples of several gateways in one
// bucket add up.
func (a *Autoscaler) Record(s Sample) {
	b := a.bucket(s.At)
	a.buckets[b] += s.Concurrency
	if a.first < 0 || b < a.first {
		a.first = b
	}
	if (s.Concurrency > 0 || s.Waiting > 0 || s.Requests > 0) && s.At.After(a.lastActive) {
		a.lastActive = s.At
	}
}

// average is the mean concurrency over the window ending at now, counting
// only buckets since the first sample (a new deployment is not diluted by
// the time before it had traffic).
func (a *Autoscaler) average(now time.Time, window time.Duration) float64 {
	if a.first < 0 {
		return 0
	}
	end := a.bucket(now)
	n := int64(window / a.cfg.Granularity)
	if n < 1 {
		n = 1
	}
	start := end - n + 1
	if start < a.first {
		start = a.first
	}
	if start > end {
		return 0
	}
	var sum float64
	for b := start; b <= end; b++ {
		sum += a.buckets[b]
	}
	return sum / float64(end-start+1)
}

// Desired returns the replica count for now, given how many replicas are
// ready, and advances the panic state.
func (a *Autoscaler) Desired(now time.Time, ready int) Decision {
	// Forget buckets older than the stable window.
	oldest := a.bucket(now) - int64(a.cfg.StableWindow/a.cfg.Granularity)
	for b := range a.buckets {
		if b < oldest {
			delete(a.buckets, b)
		}
	}
	stable := a.average(now, a.cfg.StableWindow)
	burst := a.average(now, a.cfg.PanicWindow)
	d := Decision{StableConcurrency: stable, PanicConcurrency: burst}
	want := int(math.Ceil(stable / a.cfg.TargetConcurrency))
	wantPanic := int(math.Ceil(burst / a.cfg.TargetConcurrency))

	if burst/a.cfg.TargetConcurrency >= a.cfg.PanicThreshold*float64(max(ready, 1)) {
		a.panicking, a.panicSince = true, now
	} else if a.panicking && now.Sub(a.panicSince) >= a.cfg.StableWindow {
		a.panicking, a.panicMax = false, 0
	}
	if a.panicking {
		want = max(wantPanic, a.panicMax, ready)
		a.panicMax = want
	}
	d.Panic = a.panicking

	d.Idle = a.lastActive.IsZero() || now.Sub(a.lastActive) >= a.cfg.IdleTimeout
	switch {
	case d.Idle && !a.panicking:
		want = 0
	case want == 0:
		// Traffic within the idle timeout keeps one replica warm.
		want = 1
	}
	want = max(want, a.cfg.MinReplicas)
	if a.cfg.MaxReplicas > 0 {
		want = min(want, a.cfg.MaxReplicas)
	}
	d.Replicas = want
	return d
}
