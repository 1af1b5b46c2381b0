package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// The reservation protocol: a coordinator asks a node to reserve, commit,
// renew, release or list reservations. One stream carries one call and its
// answer, each a frame: uvarint length, then that many bytes of JSON
// (coordinator.Call, coordinator.Answer). The node admits against its
// ledger, one call at a time.
const (
	ReserveProtocol = protocol.ID("/shoal/reserve/1.0.0")
	// maxCallBytes bounds a call: one reservation, or up to maxCallIDs IDs.
	maxCallBytes = 256 << 10
	// maxAnswerBytes bounds an answer (a list of many reservations).
	maxAnswerBytes = 16 << 20
	maxCallIDs     = 1024
	maxIDLen       = 512
	maxLease       = 24 * time.Hour
	// LedgerFile keeps the ledger's reservations across restarts.
	LedgerFile = "ledger.json"
)

// ErrBadCall: a reservation call is malformed.
var ErrBadCall = errors.New("node: malformed reservation call")

// writeFrame writes v as one frame.
func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen64), uint64(len(b)))
	_, err = w.Write(append(buf, b...))
	return err
}

// pushFrame sends v as one frame to member p on pid and waits (within
// timeout in all) for the one-byte acknowledgement the deployment and
// serving protocols answer with.
func pushFrame(ctx context.Context, s streams, p peer.ID, pid protocol.ID, v any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := s.OpenStream(ctx, p, pid)
	if err != nil {
		return err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(timeout))
	if err := writeFrame(st, v); err != nil {
		st.Reset()
		return err
	}
	_ = st.CloseWrite()
	var ack [1]byte
	_, _ = st.Read(ack[:])
	return nil
}

// readFrame reads one frame of at most limit bytes.
func readFrame(r *bufio.Reader, limit int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: length: %v", ErrBadCall, err)
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("%w: frame of %d bytes, at most %d", ErrBadCall, n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrBadCall, err)
	}
	return b, nil
}

// decodeCall parses and checks a call: a known op, a lease within bounds,
// bounded IDs, a reservation for reserve with a well-formed slot.
func decodeCall(b []byte) (coordinator.Call, error) {
	var c coordinator.Call
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrBadCall, err)
	}
	if dec.More() {
		return c, fmt.Errorf("%w: trailing data", ErrBadCall)
	}
	if c.LeaseMillis < 0 || time.Duration(c.LeaseMillis)*time.Millisecond > maxLease {
		return c, fmt.Errorf("%w: lease %d ms outside 0..%v", ErrBadCall, c.LeaseMillis, maxLease)
	}
	if len(c.IDs) > maxCallIDs || len(c.Evict) > maxCallIDs || len(c.Deployment) > maxIDLen {
		return c, fmt.Errorf("%w: %d IDs, %d to evict, at most %d", ErrBadCall, len(c.IDs), len(c.Evict), maxCallIDs)
	}
	if len(c.Evict) > 0 && c.Op != coordinator.OpReserve {
		return c, fmt.Errorf("%w: evictions on %s", ErrBadCall, c.Op)
	}
	for _, id := range append(c.IDs, c.Evict...) {
		if id == "" || len(id) > maxIDLen {
			return c, fmt.Errorf("%w: reservation ID of %d bytes", ErrBadCall, len(id))
		}
	}
	switch c.Op {
	case coordinator.OpReserve:
		r := c.Reservation
		switch {
		case r == nil:
			return c, fmt.Errorf("%w: reserve without a reservation", ErrBadCall)
		case r.ID == "" || len(r.ID) > maxIDLen || r.Deployment == "" || len(r.Deployment) > maxIDLen || len(r.Holder) > maxIDLen:
			return c, fmt.Errorf("%w: reservation ID, deployment or holder empty or too long", ErrBadCall)
		case len(r.Slot.GPUs) > mesh.MaxFreeGPUs || r.Slot.CPUMilli < 0:
			return c, fmt.Errorf("%w: slot with %d GPUs or negative CPU", ErrBadCall, len(r.Slot.GPUs))
		case c.LeaseMillis == 0:
			return c, fmt.Errorf("%w: reserve without a lease", ErrBadCall)
		}
		for _, g := range r.Slot.GPUs {
			if g.Milli < 0 || g.Milli > ledger.MilliPerGPU || g.UUID == "" || len(g.UUID) > maxIDLen || g.VRAM > 1<<62 {
				return c, fmt.Errorf("%w: GPU share %+v", ErrBadCall, g)
			}
		}
		if r.Slot.MemoryBytes > 1<<62 || r.Slot.DiskBytes > 1<<62 {
			return c, fmt.Errorf("%w: memory or disk out of range", ErrBadCall)
		}
	case coordinator.OpCommit, coordinator.OpRenew:
		if c.LeaseMillis == 0 {
			return c, fmt.Errorf("%w: %s without a lease", ErrBadCall, c.Op)
		}
	case coordinator.OpRelease, coordinator.OpList:
	default:
		return c, fmt.Errorf("%w: unknown op %q", ErrBadCall, c.Op)
	}
	return c, nil
}

func decodeAnswer(b []byte) (coordinator.Answer, error) {
	var a coordinator.Answer
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("%w: answer: %v", ErrBadCall, err)
	}
	return a, nil
}

// ledgerServer admits reservations against this node's ledger. It
// serialises every call, persists the reservations after each change and
// tells whoever listens on changed that the free capacity moved, and
// whoever listens on settled that a reservation was committed or ended
// (the replica runner, which starts and stops replicas on those).
type ledgerServer struct {
	mu      sync.Mutex
	led     *ledger.Ledger
	path    string
	now     func() time.Time
	log     *slog.Logger
	changed chan struct{}
	settled chan struct{}
	// leaving: the node drains before it leaves; it admits no new
	// reservation.
	leaving bool
}

// setLeaving makes the ledger refuse every new reservation.
func (s *ledgerServer) setLeaving() {
	s.mu.Lock()
	s.leaving = true
	s.mu.Unlock()
}

// ledgerFile is the persisted form.
type ledgerFile struct {
	Reservations []ledger.Reservation `json:"reservations"`
}

// openLedger loads the ledger of home over capacity c; reservations whose
// lease ended while the daemon was down, or that no longer fit, are
// dropped (and logged).
func openLedger(home string, c ledger.Capacity, now func() time.Time, log *slog.Logger) (*ledgerServer, error) {
	s := &ledgerServer{led: ledger.New(c), path: filepath.Join(home, LedgerFile), now: now, log: log, changed: make(chan struct{}, 1), settled: make(chan struct{}, 1)}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("node: read ledger: %w", err)
	}
	var f ledgerFile
	if err := json.Unmarshal(b, &f); err != nil {
		log.Warn("ignoring unreadable ledger file; starting with no reservations", "file", s.path, "err", err)
		return s, nil
	}
	t := now()
	for _, r := range f.Reservations {
		if !r.Expires.After(t) {
			continue
		}
		if err := s.led.Restore(r); err != nil {
			log.Warn("dropping a saved reservation", "id", r.ID, "err", err)
		}
	}
	return s, nil
}

// save writes the reservations to the ledger file; the caller holds mu.
func (s *ledgerServer) save() {
	b, err := json.MarshalIndent(ledgerFile{Reservations: s.led.List()}, "", "  ")
	if err == nil {
		tmp := s.path + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, s.path)
		}
	}
	if err != nil {
		s.log.Warn("could not save the ledger", "err", err)
	}
}

func (s *ledgerServer) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// settle tells the listener on settled, without blocking, that the set of
// committed reservations changed.
func (s *ledgerServer) settle() {
	select {
	case s.settled <- struct{}{}:
	default:
	}
}

// serve answers one call.
func (s *ledgerServer) serve(c coordinator.Call) coordinator.Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	lease := time.Duration(c.LeaseMillis) * time.Millisecond
	var a coordinator.Answer
	mutated := false
	switch c.Op {
	case coordinator.OpReserve:
		r := c.Reservation
		lr := ledger.Reservation{
			ID: r.ID, Deployment: r.Deployment, Holder: r.Holder,
			Priority: ledger.Priority(r.Priority), Preemptible: r.Class == scheduler.Batch.String(),
			Claim: claimOf(r.Slot),
		}
		if s.leaving {
			a.Refused = &coordinator.Refused{Resource: "node leaving the pool"}
			break
		}
		// The replicas of evicted reservations stop when the runner next
		// reconciles against the ledger; their coordinators find them gone
		// at their next renewal.
		gone, err := s.led.ReserveEvicting(now, lr, lease, c.Evict)
		for _, g := range gone {
			a.Evicted = append(a.Evicted, g.ID)
			s.log.Info("reservation evicted", "id", g.ID, "deployment", g.Deployment, "by", r.ID)
		}
		var ie *ledger.InsufficientError
		switch {
		case errors.As(err, &ie):
			a.Refused = &coordinator.Refused{Resource: string(ie.Resource), GPU: ie.GPU, Want: ie.Want, Free: ie.Free}
		case err != nil:
			a.Error = err.Error()
		default:
			mutated = true
		}
	case coordinator.OpCommit, coordinator.OpRenew:
		for _, id := range c.IDs {
			var err error
			if c.Op == coordinator.OpCommit {
				err = s.led.Commit(now, id, lease)
			} else {
				err = s.led.Renew(now, id, lease)
			}
			if err != nil {
				a.Unknown = append(a.Unknown, id)
			} else {
				mutated = true
			}
		}
	case coordinator.OpRelease:
		for _, id := range c.IDs {
			if s.led.Release(id) {
				mutated = true
			}
		}
	case coordinator.OpList:
		for _, r := range s.led.List() {
			if c.Deployment == "" || r.Deployment == c.Deployment {
				a.Reservations = append(a.Reservations, wireReservation(r))
			}
		}
	default:
		a.Error = fmt.Sprintf("unknown op %q", c.Op)
	}
	if mutated {
		s.save()
		if c.Op != coordinator.OpRenew {
			s.signal()
		}
		if c.Op == coordinator.OpCommit || c.Op == coordinator.OpRelease || len(a.Evicted) > 0 {
			s.settle()
		}
	}
	f := wireFree(s.led.Free())
	a.Free = &f
	return a
}

// expire drops reservations whose lease ended and returns them.
func (s *ledgerServer) expire() []ledger.Reservation {
	s.mu.Lock()
	defer s.mu.Unlock()
	gone := s.led.Expire(s.now())
	if len(gone) > 0 {
		s.save()
		s.signal()
		s.settle()
	}
	return gone
}

func (s *ledgerServer) setCapacity(c ledger.Capacity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.led.Capacity()
	if equalCapacity(old, c) {
		return
	}
	s.led.SetCapacity(c)
	s.signal()
}

func equalCapacity(a, b ledger.Capacity) bool {
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

// view is the ledger as GET /v1/ledger shows it.
func (s *ledgerServer) view() LedgerView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return LedgerView{Capacity: s.led.Capacity(), Free: s.led.Free(), Reservations: s.led.List()}
}

func (s *ledgerServer) free() ledger.Free {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.led.Free()
}

// LedgerView is GET /v1/ledger: this node's capacity, what is not promised
// and every reservation.
type LedgerView struct {
	Capacity     ledger.Capacity      `json:"capacity"`
	Free         ledger.Free          `json:"free"`
	Reservations []ledger.Reservation `json:"reservations"`
}

// handleStream serves one reservation call from a member.
func (s *ledgerServer) handleStream(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := readFrame(bufio.NewReader(st), maxCallBytes)
	var a coordinator.Answer
	if err == nil {
		var c coordinator.Call
		if c, err = decodeCall(b); err == nil {
			a = s.serve(c)
		}
	}
	if err != nil {
		a.Error = err.Error()
	}
	_ = writeFrame(st, a)
}

// capacityOf is what this node offers, from its inventory: every GPU with
// its total VRAM, the host's cores and memory, and the free disk rounded
// down to GiB (so that the announcement does not change with every byte
// written).
func capacityOf(inv hardware.Inventory) ledger.Capacity {
	c := ledger.Capacity{
		CPUMilli:    int64(inv.Host.CPUCores) * 1000,
		MemoryBytes: int64(inv.Host.MemoryTotalBytes),
		DiskBytes:   int64(inv.Host.DiskFreeBytes >> 30 << 30),
	}
	for _, g := range inv.GPUs {
		c.GPUs = append(c.GPUs, ledger.GPU{UUID: g.UUID, VRAMBytes: int64(g.VRAMTotalBytes)})
	}
	return c
}

func claimOf(s scheduler.Slot) ledger.Claim {
	c := ledger.Claim{CPUMilli: s.CPUMilli, MemoryBytes: int64(s.MemoryBytes), DiskBytes: int64(s.DiskBytes)}
	for _, g := range s.GPUs {
		c.GPUs = append(c.GPUs, ledger.GPUClaim{UUID: g.UUID, Milli: int64(g.Milli), VRAMBytes: int64(g.VRAM)})
	}
	return c
}

func wireReservation(r ledger.Reservation) coordinator.Reservation {
	slot := scheduler.Slot{CPUMilli: r.Claim.CPUMilli, MemoryBytes: uint64(max(0, r.Claim.MemoryBytes)), DiskBytes: uint64(max(0, r.Claim.DiskBytes))}
	for _, g := range r.Claim.GPUs {
		slot.GPUs = append(slot.GPUs, scheduler.GPUShare{UUID: g.UUID, Milli: int(g.Milli), VRAM: uint64(max(0, g.VRAMBytes))})
	}
	class := scheduler.Inference
	if r.Preemptible {
		class = scheduler.Batch
	}
	return coordinator.Reservation{
		ID: r.ID, Deployment: r.Deployment, Holder: r.Holder, Priority: int(r.Priority), Class: class.String(),
		Slot: slot, State: string(r.State), Expires: r.Expires, Since: r.Since,
	}
}

func wireFree(f ledger.Free) coordinator.Free {
	out := coordinator.Free{CPUMilli: f.CPUMilli, MemoryBytes: f.MemoryBytes, DiskBytes: f.DiskBytes}
	for _, g := range f.GPUs {
		out.GPUs = append(out.GPUs, coordinator.GPUFree{UUID: g.UUID, Milli: g.Milli, VRAMBytes: g.VRAMBytes})
	}
	return out
}

func meshFree(f ledger.Free) mesh.FreeCapacity {
	out := mesh.FreeCapacity{CPUMilli: f.CPUMilli, MemoryBytes: f.MemoryBytes, DiskBytes: f.DiskBytes}
	for _, g := range f.GPUs {
		out.GPUs = append(out.GPUs, mesh.FreeGPU{UUID: g.UUID, Milli: g.Milli, VRAMBytes: g.VRAMBytes})
	}
	return out
}

// streams is what the reservation and deployment protocols need of the
// mesh (*mesh.Node).
type streams interface {
	Handle(pid protocol.ID, h network.StreamHandler)
	OpenStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error)
}

// freeAnnouncer publishes the free capacity in the node record
// (*mesh.Node).
type freeAnnouncer interface {
	SetFree(f mesh.FreeCapacity)
}

var (
	_ streams               = (*mesh.Node)(nil)
	_ freeAnnouncer         = (*mesh.Node)(nil)
	_ coordinator.Transport = meshTransport{}
)

// meshTransport carries coordinator calls over the reservation protocol;
// calls to this node go straight to its ledger.
type meshTransport struct {
	self  string
	local *ledgerServer
	s     streams
}

func (t meshTransport) Call(ctx context.Context, node string, c coordinator.Call) (coordinator.Answer, error) {
	if node == t.self {
		return t.local.serve(c), nil
	}
	id, err := peer.Decode(node)
	if err != nil {
		return coordinator.Answer{}, fmt.Errorf("node: reservation call to %q: %w", node, err)
	}
	st, err := t.s.OpenStream(ctx, id, ReserveProtocol)
	if err != nil {
		return coordinator.Answer{}, err
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if err := writeFrame(st, c); err != nil {
		st.Reset()
		return coordinator.Answer{}, fmt.Errorf("node: send %s to %s: %w", c.Op, node, err)
	}
	_ = st.CloseWrite()
	b, err := readFrame(bufio.NewReader(st), maxAnswerBytes)
	if err != nil {
		st.Reset()
		return coordinator.Answer{}, fmt.Errorf("node: answer of %s from %s: %w", c.Op, node, err)
	}
	return decodeAnswer(b)
}
