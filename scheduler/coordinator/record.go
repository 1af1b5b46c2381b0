package coordinator

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
)

// Sentinels; test with errors.Is.
var (
	// ErrBadRecord: a deployment record is malformed (no ID, no name,
	// negative replicas, a status without a version).
	ErrBadRecord = errors.New("coordinator: bad deployment record")
	// ErrUnknownDeployment: no deployment of that name.
	ErrUnknownDeployment = errors.New("coordinator: unknown deployment")
	// ErrRefused: a node refused a reservation; the error is a *Refused.
	ErrRefused = errors.New("coordinator: node refused the reservation")
)

// Version orders writes of one half of a record: a Lamport counter, then
// the writer's peer ID to break ties. The higher version wins.
type Version struct {
	Counter uint64 `json:"counter"`
	Writer  string `json:"writer,omitempty"`
}

// Less reports whether v was written before o.
func (v Version) Less(o Version) bool {
	if v.Counter != o.Counter {
		return v.Counter < o.Counter
	}
	return v.Writer < o.Writer
}

func (v Version) String() string { return fmt.Sprintf("%d@%s", v.Counter, v.Writer) }

// Spec is what a deployment asks for: the half of a record anyone may
// write (through `shoal deploy` and `shoal rm` on any node).
type Spec struct {
	Name string `json:"name"`
	// Template and Params are what the request was rendered from.
	Template string            `json:"template,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
	// Request is one replica's resources; Request.Replicas is the desired
	// count, Request.Gang places all or none, Request.Priority and Class
	// rank it.
	Request scheduler.Request `json:"request"`
	// Deleted marks a removed deployment (a tombstone): its coordinator
	// releases every reservation it holds.
	Deleted bool      `json:"deleted,omitempty"`
	Updated time.Time `json:"updated"`
	// Source is the template's YAML when it was not a built-in one, so a
	// node can render the replica it runs.
	Source string `json:"source,omitempty"`
	// ScaleToZero lets Request.Replicas be 0: the deployment runs no
	// replica while it has no traffic. IdleTimeout is how long without
	// traffic before its replicas are released (the caller of Step lowers
	// Request.Replicas; the coordinator only honours it).
	ScaleToZero bool          `json:"scale_to_zero,omitempty"`
	IdleTimeout time.Duration `json:"idle_timeout,omitempty"`
	// Owner is the peer ID of the identity that submitted the deployment:
	// the consumer its replicas' usage receipts bill.
	Owner string `json:"owner,omitempty"`
	// Avoid names nodes that new replicas must not be placed on in this
	// step: the caller of Step fills it (nodes where the deployment just
	// failed, while their backoff lasts) and it never travels with the
	// record. Replicas already there stay.
	Avoid []string `json:"-"`
}

// Desired is the number of replicas the spec asks for (0 when deleted, or
// when it scales to zero and asks for none).
func (s Spec) Desired() int {
	if s.Deleted {
		return 0
	}
	if s.ScaleToZero {
		return max(0, s.Request.Replicas)
	}
	return max(1, s.Request.Replicas)
}

// State is where a deployment stands.
type State string

// States of a deployment.
const (
	// StateQueued: some desired replicas do not fit now; Reason says why.
	// The coordinator tries again as capacity frees up.
	StateQueued State = "queued"
	// StatePlaced: every desired replica holds committed reservations.
	StatePlaced State = "placed"
	// StateFailed: no node could ever hold a replica (Reason names the
	// constraint, Closest the node that came closest). It is re-checked as
	// members come and go.
	StateFailed State = "failed"
	// StateDeleted: removed, and every reservation released.
	StateDeleted State = "deleted"
)

// Replica states.
const (
	ReplicaReserved = "reserved" // held on its nodes, not committed yet
	ReplicaPlaced   = "placed"   // committed
)

// ReplicaStatus is where one replica sits.
type ReplicaStatus struct {
	// ID is the replica's reservation ID without the slot suffix.
	ID    string           `json:"id"`
	Slots []scheduler.Slot `json:"slots"`
	State string           `json:"state"`
}

// Status is the coordinator's half of a record.
type Status struct {
	State   State  `json:"state,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Closest string `json:"closest,omitempty"`
	// Detail is the full explanation (the scheduler's refusal, or the
	// node's).
	Detail      string          `json:"detail,omitempty"`
	Coordinator string          `json:"coordinator,omitempty"`
	Replicas    []ReplicaStatus `json:"replicas,omitempty"`
	// Since is when State last changed.
	Since time.Time `json:"since,omitzero"`
}

// Record is a deployment as every member keeps it.
type Record struct {
	// ID names the deployment in the pool (its name); rendezvous hashing of
	// it picks the coordinator.
	ID            string  `json:"id"`
	Spec          Spec    `json:"spec"`
	SpecVersion   Version `json:"spec_version"`
	Status        Status  `json:"status"`
	StatusVersion Version `json:"status_version"`
}

// Validate checks what a record received from another member must hold.
func (r Record) Validate() error {
	switch {
	case r.ID == "" || len(r.ID) > 253:
		return fmt.Errorf("%w: ID %q", ErrBadRecord, r.ID)
	case r.SpecVersion.Counter == 0:
		return fmt.Errorf("%w: %s: spec without a version", ErrBadRecord, r.ID)
	case r.Spec.Request.Replicas < 0 || r.Spec.Request.Replicas > MaxReplicas:
		return fmt.Errorf("%w: %s: %d replicas, want 0..%d", ErrBadRecord, r.ID, r.Spec.Request.Replicas, MaxReplicas)
	case len(r.Status.Replicas) > MaxReplicas:
		return fmt.Errorf("%w: %s: status lists %d replicas", ErrBadRecord, r.ID, len(r.Status.Replicas))
	}
	return nil
}

// MaxReplicas bounds the replicas of one deployment.
const MaxReplicas = 1024

// merge applies o onto r half by half, last writer wins, and reports
// whether r changed.
func (r *Record) merge(o Record) bool {
	changed := false
	if r.SpecVersion.Less(o.SpecVersion) {
		r.Spec, r.SpecVersion, changed = o.Spec, o.SpecVersion, true
	}
	if r.StatusVersion.Less(o.StatusVersion) {
		r.Status, r.StatusVersion, changed = o.Status, o.StatusVersion, true
	}
	return changed
}

// Store is one member's copy of every deployment record, with the member's
// Lamport clock. It is a plain data structure: not safe for concurrent use.
type Store struct {
	self  string
	clock uint64
	recs  map[string]*Record
}

// NewStore is an empty store whose writes carry writer self.
func NewStore(self string) *Store {
	return &Store{self: self, recs: map[string]*Record{}}
}

func (s *Store) tick(seen uint64) uint64 {
	s.clock = max(s.clock, seen) + 1
	return s.clock
}

// Merge applies a record received from another member; it reports whether
// anything changed. Invalid records change nothing.
func (s *Store) Merge(o Record) (bool, error) {
	if err := o.Validate(); err != nil {
		return false, err
	}
	s.clock = max(s.clock, o.SpecVersion.Counter, o.StatusVersion.Counter)
	r, ok := s.recs[o.ID]
	if !ok {
		c := o
		s.recs[o.ID] = &c
		return true, nil
	}
	return r.merge(o), nil
}

// Put writes spec as the new spec of deployment id and returns the record.
func (s *Store) Put(id string, spec Spec) Record {
	r, ok := s.recs[id]
	if !ok {
		r = &Record{ID: id}
		s.recs[id] = r
	}
	r.Spec = spec
	r.SpecVersion = Version{Counter: s.tick(max(r.SpecVersion.Counter, r.StatusVersion.Counter)), Writer: s.self}
	return *r
}

// Delete writes a tombstone over deployment id.
func (s *Store) Delete(id string, now time.Time) (Record, error) {
	r, ok := s.recs[id]
	if !ok || r.Spec.Deleted {
		return Record{}, fmt.Errorf("%w: %s", ErrUnknownDeployment, id)
	}
	spec := r.Spec
	spec.Deleted, spec.Updated = true, now
	return s.Put(id, spec), nil
}

// SetStatus writes st as the status of deployment id when it differs from
// the current one, and returns the record and whether it wrote.
func (s *Store) SetStatus(id string, st Status) (Record, bool) {
	r, ok := s.recs[id]
	if !ok {
		return Record{}, false
	}
	if equalStatus(r.Status, st) {
		return *r, false
	}
	if st.State == r.Status.State && !r.Status.Since.IsZero() {
		st.Since = r.Status.Since
	}
	r.Status = st
	r.StatusVersion = Version{Counter: s.tick(max(r.SpecVersion.Counter, r.StatusVersion.Counter)), Writer: s.self}
	return *r, true
}

// Get returns deployment id.
func (s *Store) Get(id string) (Record, bool) {
	r, ok := s.recs[id]
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// List is every record (tombstones included), by ID.
func (s *Store) List() []Record {
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Forget drops tombstones whose deletion is older than before and whose
// coordinator reported every reservation released.
func (s *Store) Forget(before time.Time) {
	for id, r := range s.recs {
		if r.Spec.Deleted && r.Status.State == StateDeleted && r.Spec.Updated.Before(before) {
			delete(s.recs, id)
		}
	}
}

func equalStatus(a, b Status) bool {
	if a.State != b.State || a.Reason != b.Reason || a.Closest != b.Closest || a.Detail != b.Detail || a.Coordinator != b.Coordinator || len(a.Replicas) != len(b.Replicas) {
		return false
	}
	for i := range a.Replicas {
		x, y := a.Replicas[i], b.Replicas[i]
		if x.ID != y.ID || x.State != y.State || len(x.Slots) != len(y.Slots) {
			return false
		}
	}
	return true
}
