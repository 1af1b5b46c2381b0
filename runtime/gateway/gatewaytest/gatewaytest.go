// Package gatewaytest has in-memory versions of the gateway's
// collaborators for tests: a Directory the test fills, a Scaler and a
// Reporter that record what they receive, and a settable clock.
package gatewaytest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/runtime/gateway"
)

// Directory is an in-memory gateway.Directory.
type Directory struct {
	mu      sync.Mutex
	deps    map[string][]gateway.Replica
	changed map[string]chan struct{}
}

var _ gateway.Directory = (*Directory)(nil)

// NewDirectory returns a directory serving the named deployments, none
// with a ready replica.
func NewDirectory(deployments ...string) *Directory {
	d := &Directory{deps: map[string][]gateway.Replica{}, changed: map[string]chan struct{}{}}
	for _, n := range deployments {
		d.deps[n] = nil
	}
	return d
}

// Set makes ready the replicas of deployment (none: scaled to zero) and
// wakes whoever waits on it.
func (d *Directory) Set(deployment string, ready ...gateway.Replica) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deps[deployment] = slices.Clone(ready)
	d.notifyLocked(deployment)
}

// Remove stops serving deployment.
func (d *Directory) Remove(deployment string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.deps, deployment)
	d.notifyLocked(deployment)
}

func (d *Directory) notifyLocked(dep string) {
	if c, ok := d.changed[dep]; ok {
		close(c)
		delete(d.changed, dep)
	}
}

// Lookup implements gateway.Directory.
func (d *Directory) Lookup(deployment string) ([]gateway.Replica, <-chan struct{}, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rs, known := d.deps[deployment]
	c, ok := d.changed[deployment]
	if !ok {
		c = make(chan struct{})
		d.changed[deployment] = c
	}
	return rs, c, known
}

// Deployments implements gateway.Directory.
func (d *Directory) Deployments() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.deps))
	for n := range d.deps {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ScaleUpCall is one ScaleUp a Scaler received.
type ScaleUpCall struct {
	Deployment string
	At         time.Time
}

// Scaler records ScaleUp calls and runs OnScaleUp, when set, for each.
type Scaler struct {
	// OnScaleUp runs in the caller's goroutine; its error is returned.
	OnScaleUp func(ctx context.Context, deployment string) error

	mu    sync.Mutex
	calls []ScaleUpCall
}

var _ gateway.Scaler = (*Scaler)(nil)

// ScaleUp implements gateway.Scaler.
func (s *Scaler) ScaleUp(ctx context.Context, deployment string) error {
	s.mu.Lock()
	s.calls = append(s.calls, ScaleUpCall{deployment, time.Now()})
	f := s.OnScaleUp
	s.mu.Unlock()
	if f != nil {
		return f(ctx, deployment)
	}
	return nil
}

// Calls returns the ScaleUp calls so far.
func (s *Scaler) Calls() []ScaleUpCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Report is one sample a Reporter received.
type Report struct {
	Deployment string
	Sample     gateway.Sample
}

// Reporter records samples.
type Reporter struct {
	mu      sync.Mutex
	reports []Report
}

var _ gateway.Reporter = (*Reporter)(nil)

// Report implements gateway.Reporter.
func (r *Reporter) Report(deployment string, s gateway.Sample) {
	r.mu.Lock()
	r.reports = append(r.reports, Report{deployment, s})
	r.mu.Unlock()
}

// Reports returns the samples so far.
func (r *Reporter) Reports() []Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reports)
}

// Clock is a clock the test sets.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

var _ gateway.Clock = (*Clock)(nil)

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now implements gateway.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
