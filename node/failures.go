package node

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// failurePolicy says how a deployment whose replicas fail is placed again.
// Defaults come from defaultFailurePolicy.
type failurePolicy struct {
	// BackoffFirst: after a replica of a deployment failed on a node, that
	// node gets no new replica of it for this long; each further failure
	// there doubles the wait, up to BackoffMax. Other nodes are tried
	// meanwhile, so a replica that fails on one card moves to another.
	BackoffFirst, BackoffMax time.Duration
	// MaxFailures: this many failed replicas of one deployment (anywhere in
	// the pool, within Memory) and it is failed: its replicas are released
	// and it is not placed again until it is deployed anew.
	MaxFailures int
	// Memory: a failure older than this no longer counts.
	Memory time.Duration
}

func defaultFailurePolicy() failurePolicy {
	return failurePolicy{BackoffFirst: 2 * time.Second, BackoffMax: time.Minute, MaxFailures: 3, Memory: 30 * time.Minute}
}

// replicaFailure is one replica that gave up: its supervisor saw it
// crash-loop, or it could not be prepared.
type replicaFailure struct {
	Deployment  string
	Node        string
	Reservation string
	Reason      string
	At          time.Time // when this member learned of it
}

// failureBook remembers the failed replicas of every deployment that this
// member learned of (its own and those in the serving reports) and turns
// them into what the coordinator must avoid. It is a plain data structure
// with time passed in: not safe for concurrent use.
type failureBook struct {
	pol  failurePolicy
	seen map[string]time.Time // reservation ID → when noted (a report repeats its failures)
	deps map[string]*depFailures
}

type depFailures struct {
	// since: failures before it belong to an earlier spec (the deployment
	// was deployed anew) and are ignored.
	since time.Time
	list  []replicaFailure
}

func newFailureBook(p failurePolicy) *failureBook {
	return &failureBook{pol: p, seen: map[string]time.Time{}, deps: map[string]*depFailures{}}
}

// note records f unless its reservation was noted already; it reports
// whether f is new.
func (b *failureBook) note(f replicaFailure) bool {
	if _, ok := b.seen[f.Reservation]; ok || f.Reservation == "" || f.Deployment == "" {
		return false
	}
	b.seen[f.Reservation] = f.At
	d := b.deps[f.Deployment]
	if d == nil {
		d = &depFailures{}
		b.deps[f.Deployment] = d
	}
	d.list = append(d.list, f)
	return true
}

// reset forgets dep's failures before at (a new spec was written then).
func (b *failureBook) reset(dep string, at time.Time) {
	if d := b.deps[dep]; d != nil && at.After(d.since) {
		d.since = at
	}
}

// failureVerdict is what a deployment's failures mean for its next step.
type failureVerdict struct {
	// Avoid are the nodes still in their backoff for it, sorted.
	Avoid []string
	// Failed: it failed MaxFailures times; Reason says how.
	Failed bool
	// Count is how many failures count, of Max allowed; Last is the
	// latest of them.
	Count, Max int
	Last       replicaFailure
}

// Reason is a line for the deployment's status.
func (v failureVerdict) Reason() string {
	if v.Count == 0 {
		return ""
	}
	node := v.Last.Node
	if len(node) > 12 {
		node = node[len(node)-12:]
	}
	if v.Failed {
		return fmt.Sprintf("replicas failed %d times, last on %s: %s", v.Count, node, v.Last.Reason)
	}
	return fmt.Sprintf("a replica failed on %s (%d of %d before giving up): %s", node, v.Count, v.Max, v.Last.Reason)
}

// verdict judges dep at now, and forgets what is past Memory.
func (b *failureBook) verdict(dep string, now time.Time) failureVerdict {
	for id, at := range b.seen {
		if now.Sub(at) > b.pol.Memory {
			delete(b.seen, id)
		}
	}
	d := b.deps[dep]
	if d == nil {
		return failureVerdict{Max: b.pol.MaxFailures}
	}
	d.list = slices.DeleteFunc(d.list, func(f replicaFailure) bool { return now.Sub(f.At) > b.pol.Memory })
	v := failureVerdict{Max: b.pol.MaxFailures}
	perNode := map[string][]time.Time{}
	for _, f := range d.list {
		if f.At.Before(d.since) {
			continue
		}
		v.Count++
		if !f.At.Before(v.Last.At) {
			v.Last = f
		}
		perNode[f.Node] = append(perNode[f.Node], f.At)
	}
	if len(d.list) == 0 {
		delete(b.deps, dep)
	}
	v.Failed = v.Count >= b.pol.MaxFailures
	for node, ats := range perNode {
		last := slices.MaxFunc(ats, func(a, b time.Time) int { return a.Compare(b) })
		wait := b.pol.BackoffFirst
		for i := 1; i < len(ats) && wait < b.pol.BackoffMax; i++ {
			wait *= 2
		}
		if now.Sub(last) < min(wait, b.pol.BackoffMax) {
			v.Avoid = append(v.Avoid, node)
		}
	}
	slices.Sort(v.Avoid)
	return v
}

// failureReason turns a supervisor's error into one line for `shoal ps`:
// its first line and, when it quotes the workload's output, the last line
// of that output.
func failureReason(err string) string {
	first, rest, ok := strings.Cut(err, "\n")
	if !ok {
		return first
	}
	first = strings.TrimSuffix(strings.TrimSpace(first), "; its output ends:")
	lines := strings.Split(strings.TrimSpace(rest), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			if len(l) > 200 {
				l = l[:200]
			}
			return first + ": " + l
		}
	}
	return first
}
