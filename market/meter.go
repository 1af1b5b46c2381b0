package market

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Clock tells the time. The daemon passes the wall clock; tests step a fake.
type Clock interface {
	Now() time.Time
}

// MeterConfig configures a Meter. Durations are wall time.
type MeterConfig struct {
	// Pool is the pool ID written into every receipt.
	Pool string
	// Server is this node's peer ID: the serving identity of its receipts.
	Server peer.ID
	// Period is how much confirmed running time a replica accrues before it
	// is cut into a receipt. A crash of the daemon loses at most the
	// uncut part: less than one Period of confirmed time. Default 60 s.
	Period time.Duration
	// StaleAfter is how long a replica may go without a heartbeat before
	// the Meter stops billing it: Tick then cuts it at its last heartbeat
	// and forgets it, and a heartbeat that arrives after a longer gap starts
	// a new interval without billing the gap. Default 30 s.
	StaleAfter time.Duration
	// NextSeq is the sequence number of the next receipt. A restarted
	// daemon passes Ledger.NextSeq(Server) so no number is used twice
	// (a reused number makes every ledger reject the receipt). Default 1.
	NextSeq uint64
}

// DefaultPeriod and DefaultStaleAfter are MeterConfig's defaults.
const (
	DefaultPeriod     = time.Minute
	DefaultStaleAfter = 30 * time.Second
)

func (c *MeterConfig) validate() error {
	if c.Period == 0 {
		c.Period = DefaultPeriod
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.NextSeq == 0 {
		c.NextSeq = 1
	}
	switch {
	case c.Pool == "":
		return fmt.Errorf("%w: no pool ID", ErrInvalidConfig)
	case c.Server == "":
		return fmt.Errorf("%w: no server peer ID", ErrInvalidConfig)
	case c.Period < time.Second || c.StaleAfter < time.Second:
		return fmt.Errorf("%w: period %s and stale-after %s must be at least 1s", ErrInvalidConfig, c.Period, c.StaleAfter)
	case c.Period+c.StaleAfter > DefaultMaxSpan:
		return fmt.Errorf("%w: period plus stale-after above %s, the longest interval ledgers accept", ErrInvalidConfig, DefaultMaxSpan)
	}
	return nil
}

// Replica is what the Meter bills: one running replica on this node.
type Replica struct {
	ID         string     // replica ID, unique in the deployment
	Deployment string     // deployment ID
	Consumer   peer.ID    // the identity that owns the deployment
	Model      string     // GPU model of its GPUs, as priced
	GPUs       []GPUShare // the GPUs it holds and its share of each
	Price      Micro      // price per GPU-hour in force when it started
}

// running is a metered replica: billed up to from, confirmed running up to
// seen.
type running struct {
	rep        Replica
	from, seen time.Time
}

// Meter turns running replicas into usage receipts. It bills only
// confirmed time: from Start to the last Heartbeat or Stop. It is a state
// machine over an injected clock: no goroutines, no I/O; the daemon calls
// Tick on a timer, signs what comes out (Receipt.Sign) and stores it. Not
// safe for concurrent use.
type Meter struct {
	cfg   MeterConfig
	clock Clock
	reps  map[string]*running
}

// NewMeter is a Meter for cfg reading time from clock.
func NewMeter(cfg MeterConfig, clock Clock) (*Meter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		return nil, fmt.Errorf("%w: no clock", ErrInvalidConfig)
	}
	return &Meter{cfg: cfg, clock: clock, reps: map[string]*running{}}, nil
}

// now is the clock truncated to the millisecond, the receipts' precision.
func (m *Meter) now() time.Time {
	return time.UnixMilli(m.clock.Now().UnixMilli()).UTC()
}

// NextSeq is the sequence number the next receipt will carry.
func (m *Meter) NextSeq() uint64 { return m.cfg.NextSeq }

// Running lists the IDs of the replicas being metered, sorted.
func (m *Meter) Running() []string {
	ids := make([]string, 0, len(m.reps))
	for id := range m.reps {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Start begins metering r now. A replica without GPUs is accepted and
// never billed.
func (m *Meter) Start(r Replica) error {
	if r.ID == "" || r.Deployment == "" || r.Consumer == "" || (len(r.GPUs) > 0 && r.Model == "") {
		return fmt.Errorf("%w: replica %q lacks an ID, deployment, consumer or GPU model", ErrInvalidReplica, r.ID)
	}
	if r.Price < 0 || r.Price > MaxPrice {
		return fmt.Errorf("%w: price %s", ErrInvalidReplica, r.Price)
	}
	if len(r.GPUs) > MaxReceiptGPUs {
		return fmt.Errorf("%w: %d GPUs", ErrInvalidReplica, len(r.GPUs))
	}
	gpus := slices.Clone(r.GPUs)
	slices.SortFunc(gpus, func(a, b GPUShare) int { return strings.Compare(a.UUID, b.UUID) })
	for i, g := range gpus {
		if g.UUID == "" || g.Milli < 1 || g.Milli > 1000 || i > 0 && gpus[i-1].UUID == g.UUID {
			return fmt.Errorf("%w: GPU %q with %d milli", ErrInvalidReplica, g.UUID, g.Milli)
		}
	}
	if _, ok := m.reps[r.ID]; ok {
		return fmt.Errorf("%w: %q", ErrReplicaExists, r.ID)
	}
	r.GPUs = gpus
	now := m.now()
	m.reps[r.ID] = &running{rep: r, from: now, seen: now}
	return nil
}

// Heartbeat confirms that replica id still runs now. It returns the receipt
// cut when a Period of confirmed time has accrued. After a silence longer
// than StaleAfter the gap is not billed: the time before it is cut and a new
// interval starts now.
func (m *Meter) Heartbeat(id string) ([]Receipt, error) {
	rr, ok := m.reps[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownReplica, id)
	}
	now := m.now()
	if !now.After(rr.seen) {
		return nil, nil
	}
	if now.Sub(rr.seen) > m.cfg.StaleAfter {
		out := m.cut(rr, nil)
		rr.from, rr.seen = now, now
		return out, nil
	}
	rr.seen = now
	if rr.seen.Sub(rr.from) >= m.cfg.Period {
		return m.cut(rr, nil), nil
	}
	return nil, nil
}

// Stop ends metering replica id now and returns its last receipt.
func (m *Meter) Stop(id string) ([]Receipt, error) {
	rr, ok := m.reps[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownReplica, id)
	}
	delete(m.reps, id)
	now := m.now()
	if now.Sub(rr.seen) <= m.cfg.StaleAfter && now.After(rr.seen) {
		rr.seen = now
	}
	return m.cut(rr, nil), nil
}

// Tick cuts every replica with a Period of confirmed time not yet billed,
// and stops billing replicas silent for longer than StaleAfter (cut at
// their last heartbeat and forgotten; a later Heartbeat for one returns
// ErrUnknownReplica, and the daemon may Start it again). Receipts come out
// in replica ID order.
func (m *Meter) Tick() []Receipt {
	now := m.now()
	var out []Receipt
	for _, id := range m.Running() {
		rr := m.reps[id]
		switch {
		case now.Sub(rr.seen) > m.cfg.StaleAfter:
			delete(m.reps, id)
			out = m.cut(rr, out)
		case rr.seen.Sub(rr.from) >= m.cfg.Period:
			out = m.cut(rr, out)
		}
	}
	return out
}

// Flush cuts the confirmed time of every replica, whatever its length: for
// a daemon that is shutting down.
func (m *Meter) Flush() []Receipt {
	var out []Receipt
	for _, id := range m.Running() {
		out = m.cut(m.reps[id], out)
	}
	return out
}

// cut bills rr from its last cut to its last confirmation.
func (m *Meter) cut(rr *running, out []Receipt) []Receipt {
	if len(rr.rep.GPUs) == 0 || !rr.seen.After(rr.from) {
		rr.from = rr.seen
		return out
	}
	r := Receipt{
		Pool: m.cfg.Pool, Server: m.cfg.Server, Consumer: rr.rep.Consumer,
		Deployment: rr.rep.Deployment, Replica: rr.rep.ID, Model: rr.rep.Model,
		GPUs: slices.Clone(rr.rep.GPUs), Start: rr.from, End: rr.seen,
		Price: rr.rep.Price, Seq: m.cfg.NextSeq,
	}
	r.Amount, _ = Cost(r.Price, r.Usage()) // in range: Start checked price and shares
	m.cfg.NextSeq++
	rr.from = rr.seen
	return append(out, r)
}
