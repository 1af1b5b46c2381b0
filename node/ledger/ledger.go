// Package ledger is a node's book of what its capacity is promised to: the
// only source of truth for whether a GPU, CPU, memory or disk claim fits on
// this machine. Coordinators elsewhere in the pool plan from gossiped views
// that may be stale or conflicting; the ledger admits or refuses each
// reservation against what is really free here, so no card is ever promised
// twice, whatever the coordinators believe.
//
// A reservation is held first (a coordinator's tentative claim, with a short
// lease so a dead coordinator's holds expire), then committed (a replica runs
// on it, its lease renewed by whoever coordinates the deployment). The ledger
// is a plain state machine: time comes in as an argument and nothing here
// does I/O or starts goroutines. It is not safe for concurrent use; the
// daemon serialises calls.
package ledger

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// MilliPerGPU is one whole GPU in milli-GPU.
const MilliPerGPU = 1000

var (
	// ErrInsufficient: the claim does not fit in what is free. The error is
	// an *InsufficientError naming the resource.
	ErrInsufficient = errors.New("ledger: insufficient capacity")
	// ErrUnknown: no reservation with that ID is held.
	ErrUnknown = errors.New("ledger: no such reservation")
	// ErrConflict: a reservation with that ID exists with another claim.
	ErrConflict = errors.New("ledger: reservation ID reused with another claim")
	// ErrBadClaim: the claim is malformed (unknown GPU, milli out of range,
	// a GPU named twice, negative amounts).
	ErrBadClaim = errors.New("ledger: bad claim")
	// ErrNotEvictable: a reservation named as a victim is not preemptible
	// work of lower priority than the one that would evict it.
	ErrNotEvictable = errors.New("ledger: reservation may not be evicted")
)

// Resource names what ran short.
type Resource string

// Resources a claim can run short of.
const (
	ResourceGPU    Resource = "gpu"  // a GPU's share (milli-GPU)
	ResourceVRAM   Resource = "vram" // a GPU's memory
	ResourceCPU    Resource = "cpu"
	ResourceMemory Resource = "memory"
	ResourceDisk   Resource = "disk"
)

// InsufficientError says which resource was short, on which GPU (for GPU
// and VRAM), and by how much.
type InsufficientError struct {
	Resource   Resource
	GPU        string // GPU UUID, for gpu and vram
	Want, Free int64  // milli-GPU, bytes or CPU milli
}

func (e *InsufficientError) Error() string {
	where := ""
	if e.GPU != "" {
		where = " on " + e.GPU
	}
	return fmt.Sprintf("%v: %s%s: want %d, free %d", ErrInsufficient, e.Resource, where, e.Want, e.Free)
}

func (e *InsufficientError) Unwrap() error { return ErrInsufficient }

// GPU is one card's capacity.
type GPU struct {
	UUID      string `json:"uuid"`
	VRAMBytes int64  `json:"vram_bytes"`
}

// Capacity is what this node offers to the pool.
type Capacity struct {
	GPUs        []GPU `json:"gpus"`
	CPUMilli    int64 `json:"cpu_milli"`
	MemoryBytes int64 `json:"memory_bytes"`
	DiskBytes   int64 `json:"disk_bytes"`
}

// GPUClaim is a share of one card: Milli of its compute (1000 = the whole
// card) and VRAMBytes of its memory.
type GPUClaim struct {
	UUID      string `json:"uuid"`
	Milli     int64  `json:"milli"`
	VRAMBytes int64  `json:"vram_bytes"`
}

// Claim is what one reservation takes.
type Claim struct {
	GPUs        []GPUClaim `json:"gpus,omitempty"`
	CPUMilli    int64      `json:"cpu_milli,omitempty"`
	MemoryBytes int64      `json:"memory_bytes,omitempty"`
	DiskBytes   int64      `json:"disk_bytes,omitempty"`
}

// Priority orders work for preemption: inference may evict batch.
type Priority int

// Priorities, lowest first.
const (
	PriorityBatch     Priority = 0
	PriorityInference Priority = 10
)

// State is where a reservation stands.
type State string

// States of a reservation.
const (
	StateHeld      State = "held"      // tentatively claimed by a coordinator
	StateCommitted State = "committed" // a replica runs (or starts) on it
)

// Reservation is one claim on this node.
type Reservation struct {
	// ID is unique per replica placement (deployment, replica, attempt).
	ID         string   `json:"id"`
	Deployment string   `json:"deployment"`
	Holder     string   `json:"holder"` // peer ID of the coordinator that placed it
	Priority   Priority `json:"priority"`
	// Preemptible marks batch work: a reservation of higher priority may
	// evict it (ReserveEvicting). Inference is never evicted.
	Preemptible bool  `json:"preemptible,omitempty"`
	Claim       Claim `json:"claim"`
	State       State `json:"state"`
	// Since is when the reservation was first admitted (preemption spares
	// older work, which has more to lose).
	Since time.Time `json:"since"`
	// Expires is the end of the lease; Expire releases it then unless it is
	// renewed.
	Expires time.Time `json:"expires"`
}

// Free is what is not promised.
type Free struct {
	GPUs        []GPUFree `json:"gpus"`
	CPUMilli    int64     `json:"cpu_milli"`
	MemoryBytes int64     `json:"memory_bytes"`
	DiskBytes   int64     `json:"disk_bytes"`
}

// GPUFree is what is left of one card.
type GPUFree struct {
	UUID      string `json:"uuid"`
	Milli     int64  `json:"milli"`
	VRAMBytes int64  `json:"vram_bytes"`
}

// Ledger holds the reservations of one node against its capacity.
type Ledger struct {
	capacity Capacity
	gpuIndex map[string]int
	res      map[string]*Reservation
}

// New is an empty ledger over c.
func New(c Capacity) *Ledger {
	l := &Ledger{res: map[string]*Reservation{}}
	l.SetCapacity(c)
	return l
}

// SetCapacity replaces the capacity (the hardware changed). Reservations
// stay; if they no longer fit, Free reports negative amounts and new claims
// are refused until enough are released.
func (l *Ledger) SetCapacity(c Capacity) {
	l.capacity = c
	l.gpuIndex = make(map[string]int, len(c.GPUs))
	for i, g := range c.GPUs {
		l.gpuIndex[g.UUID] = i
	}
}

// Capacity is what the ledger books against.
func (l *Ledger) Capacity() Capacity { return l.capacity }

// Free is the capacity minus every reservation, held or committed.
func (l *Ledger) Free() Free {
	return l.freeExcept(nil)
}

func (l *Ledger) freeExcept(skip map[string]bool) Free {
	f := Free{
		GPUs:        make([]GPUFree, len(l.capacity.GPUs)),
		CPUMilli:    l.capacity.CPUMilli,
		MemoryBytes: l.capacity.MemoryBytes,
		DiskBytes:   l.capacity.DiskBytes,
	}
	for i, g := range l.capacity.GPUs {
		f.GPUs[i] = GPUFree{UUID: g.UUID, Milli: MilliPerGPU, VRAMBytes: g.VRAMBytes}
	}
	for id, r := range l.res {
		if skip[id] {
			continue
		}
		f.CPUMilli -= r.Claim.CPUMilli
		f.MemoryBytes -= r.Claim.MemoryBytes
		f.DiskBytes -= r.Claim.DiskBytes
		for _, g := range r.Claim.GPUs {
			if i, ok := l.gpuIndex[g.UUID]; ok {
				f.GPUs[i].Milli -= g.Milli
				f.GPUs[i].VRAMBytes -= g.VRAMBytes
			}
		}
	}
	return f
}

// check validates c and tests it against f.
func (l *Ledger) check(c Claim, f Free) error {
	if c.CPUMilli < 0 || c.MemoryBytes < 0 || c.DiskBytes < 0 {
		return fmt.Errorf("%w: negative amount", ErrBadClaim)
	}
	seen := map[string]bool{}
	for _, g := range c.GPUs {
		i, ok := l.gpuIndex[g.UUID]
		switch {
		case !ok:
			return fmt.Errorf("%w: no GPU %q on this node", ErrBadClaim, g.UUID)
		case seen[g.UUID]:
			return fmt.Errorf("%w: GPU %q named twice", ErrBadClaim, g.UUID)
		case g.Milli <= 0 || g.Milli > MilliPerGPU:
			return fmt.Errorf("%w: GPU %q share %d milli is outside 1..%d", ErrBadClaim, g.UUID, g.Milli, MilliPerGPU)
		case g.VRAMBytes < 0:
			return fmt.Errorf("%w: negative VRAM on %q", ErrBadClaim, g.UUID)
		}
		seen[g.UUID] = true
		if g.Milli > f.GPUs[i].Milli {
			return &InsufficientError{Resource: ResourceGPU, GPU: g.UUID, Want: g.Milli, Free: f.GPUs[i].Milli}
		}
		if g.VRAMBytes > f.GPUs[i].VRAMBytes {
			return &InsufficientError{Resource: ResourceVRAM, GPU: g.UUID, Want: g.VRAMBytes, Free: f.GPUs[i].VRAMBytes}
		}
	}
	switch {
	case c.CPUMilli > f.CPUMilli:
		return &InsufficientError{Resource: ResourceCPU, Want: c.CPUMilli, Free: f.CPUMilli}
	case c.MemoryBytes > f.MemoryBytes:
		return &InsufficientError{Resource: ResourceMemory, Want: c.MemoryBytes, Free: f.MemoryBytes}
	case c.DiskBytes > f.DiskBytes:
		return &InsufficientError{Resource: ResourceDisk, Want: c.DiskBytes, Free: f.DiskBytes}
	}
	return nil
}

// Reserve admits r as held until now+lease, or refuses it with an
// *InsufficientError (or ErrBadClaim). Reserving an ID again with the same
// claim is a renewal (a coordinator's retry), not a second claim.
func (l *Ledger) Reserve(now time.Time, r Reservation, lease time.Duration) error {
	if r.ID == "" {
		return fmt.Errorf("%w: empty reservation ID", ErrBadClaim)
	}
	if old, ok := l.res[r.ID]; ok {
		if !sameClaim(old.Claim, r.Claim) {
			return fmt.Errorf("%w: %s", ErrConflict, r.ID)
		}
		if end := now.Add(lease); end.After(old.Expires) {
			old.Expires = end
		}
		return nil
	}
	if err := l.check(r.Claim, l.Free()); err != nil {
		return err
	}
	r.State, r.Since, r.Expires = StateHeld, now, now.Add(lease)
	r.Claim.GPUs = append([]GPUClaim(nil), r.Claim.GPUs...)
	l.res[r.ID] = &r
	return nil
}

// ReserveEvicting admits r like Reserve after evicting the reservations
// named in victims, all or nothing: each victim must be Preemptible and of
// lower priority than r (else ErrNotEvictable), and r must fit once they
// are gone (else an *InsufficientError). Victims the ledger no longer holds
// are skipped. It returns the reservations it evicted (the daemon stops
// their replicas, and their coordinators find them gone). With no victims
// it is Reserve.
func (l *Ledger) ReserveEvicting(now time.Time, r Reservation, lease time.Duration, victims []string) ([]Reservation, error) {
	if _, ok := l.res[r.ID]; ok || r.ID == "" || len(victims) == 0 {
		return nil, l.Reserve(now, r, lease)
	}
	skip := map[string]bool{}
	for _, id := range victims {
		v, ok := l.res[id]
		switch {
		case !ok:
			continue
		case id == r.ID || !v.Preemptible || v.Priority >= r.Priority:
			return nil, fmt.Errorf("%w: %s (priority %d, preemptible %v) by %s (priority %d)", ErrNotEvictable, id, v.Priority, v.Preemptible, r.ID, r.Priority)
		}
		skip[id] = true
	}
	if err := l.check(r.Claim, l.freeExcept(skip)); err != nil {
		return nil, err
	}
	var out []Reservation
	for id := range skip {
		out = append(out, *l.res[id])
		delete(l.res, id)
	}
	sortReservations(out)
	return out, l.Reserve(now, r, lease)
}

// Commit turns a held reservation into a committed one with a new lease.
func (l *Ledger) Commit(now time.Time, id string, lease time.Duration) error {
	r, ok := l.res[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	r.State, r.Expires = StateCommitted, now.Add(lease)
	return nil
}

// Renew extends the lease of id to now+lease.
func (l *Ledger) Renew(now time.Time, id string, lease time.Duration) error {
	r, ok := l.res[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	r.Expires = now.Add(lease)
	return nil
}

// Release drops id and reports whether it was held.
func (l *Ledger) Release(id string) bool {
	_, ok := l.res[id]
	delete(l.res, id)
	return ok
}

// Expire releases every reservation whose lease ended at or before now and
// returns them (the daemon stops the replicas of committed ones).
func (l *Ledger) Expire(now time.Time) []Reservation {
	var out []Reservation
	for id, r := range l.res {
		if !r.Expires.After(now) {
			out = append(out, *r)
			delete(l.res, id)
		}
	}
	sortReservations(out)
	return out
}

// Get returns the reservation id.
func (l *Ledger) Get(id string) (Reservation, bool) {
	r, ok := l.res[id]
	if !ok {
		return Reservation{}, false
	}
	return *r, true
}

// List is every reservation, by ID.
func (l *Ledger) List() []Reservation {
	out := make([]Reservation, 0, len(l.res))
	for _, r := range l.res {
		out = append(out, *r)
	}
	sortReservations(out)
	return out
}

// Victims chooses reservations to evict so that c fits: only those of
// priority below p, the cheapest first. Cost is the work lost: GPU share
// times the time it has run, so young and small batch jobs go before old
// and large ones. It returns ErrInsufficient if evicting every candidate
// would still not make room, and nothing when c fits already.
func (l *Ledger) Victims(now time.Time, c Claim, p Priority) ([]Reservation, error) {
	if err := l.check(c, l.Free()); err == nil {
		return nil, nil
	} else if errors.Is(err, ErrBadClaim) {
		return nil, err
	}
	var cands []*Reservation
	for _, r := range l.res {
		if r.Priority < p && touches(r.Claim, c) {
			cands = append(cands, r)
		}
	}
	cost := func(r *Reservation) float64 {
		var milli int64
		for _, g := range r.Claim.GPUs {
			milli += g.Milli
		}
		return float64(milli+1) * (now.Sub(r.Since).Seconds() + 1)
	}
	sort.Slice(cands, func(i, j int) bool {
		ci, cj := cost(cands[i]), cost(cands[j])
		if ci != cj {
			return ci < cj
		}
		return cands[i].ID < cands[j].ID
	})
	// Greedy by cost, then drop any chosen victim that turns out not to be
	// needed (a big victim taken late can make earlier small ones moot).
	skip := map[string]bool{}
	var chosen []*Reservation
	fits := false
	for _, r := range cands {
		skip[r.ID] = true
		chosen = append(chosen, r)
		if l.check(c, l.freeExcept(skip)) == nil {
			fits = true
			break
		}
	}
	if !fits {
		return nil, l.check(c, l.freeExcept(skip))
	}
	for i := len(chosen) - 1; i >= 0; i-- {
		delete(skip, chosen[i].ID)
		if l.check(c, l.freeExcept(skip)) != nil {
			skip[chosen[i].ID] = true
		}
	}
	var out []Reservation
	for _, r := range chosen {
		if skip[r.ID] {
			out = append(out, *r)
		}
	}
	sortReservations(out)
	return out, nil
}

// touches reports whether evicting r could help c: they share a GPU, or c
// needs CPU, memory or disk that r holds.
func touches(r, c Claim) bool {
	for _, a := range r.GPUs {
		for _, b := range c.GPUs {
			if a.UUID == b.UUID {
				return true
			}
		}
	}
	return (c.CPUMilli > 0 && r.CPUMilli > 0) || (c.MemoryBytes > 0 && r.MemoryBytes > 0) || (c.DiskBytes > 0 && r.DiskBytes > 0)
}

func sameClaim(a, b Claim) bool {
	if a.CPUMilli != b.CPUMilli || a.MemoryBytes != b.MemoryBytes || a.DiskBytes != b.DiskBytes || len(a.GPUs) != len(b.GPUs) {
		return false
	}
	for i := range a.GPUs {
		if a.GPUs[i] != b.GPUs[i] {
			return false
		}
	}
	return true
}

func sortReservations(rs []Reservation) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].ID < rs[j].ID })
}

// Restore puts back a reservation saved before a restart, keeping its state
// and lease. It is refused like Reserve when it no longer fits.
func (l *Ledger) Restore(r Reservation) error {
	if r.ID == "" {
		return fmt.Errorf("%w: empty reservation ID", ErrBadClaim)
	}
	if _, ok := l.res[r.ID]; ok {
		return fmt.Errorf("%w: %s", ErrConflict, r.ID)
	}
	if err := l.check(r.Claim, l.Free()); err != nil {
		return err
	}
	r.Claim.GPUs = append([]GPUClaim(nil), r.Claim.GPUs...)
	l.res[r.ID] = &r
	return nil
}
