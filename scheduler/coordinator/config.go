package coordinator

import (
	"fmt"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
)

// Defaults, in one place.
const (
	// DefaultHoldLease: a held (not yet committed) reservation lasts this
	// long on its node. It bounds how long a coordinator that dies between
	// reserve and commit keeps a card from others.
	DefaultHoldLease = 15 * time.Second
	// DefaultCommitLease: a committed reservation lasts this long unless its
	// coordinator renews it. It must outlast the failure detector (a member
	// is dead after 6 s by default) plus one resync, so that the next
	// coordinator adopts the replica before its lease runs out.
	DefaultCommitLease = 30 * time.Second
	// DefaultResyncEvery: how often a coordinator lists the reservations
	// of the nodes that hold its deployments' replicas, to find those that
	// expired or were evicted. Each coordinator asks only those nodes, so
	// the pool spends calls in proportion to its replicas, not to the
	// square of its members.
	DefaultResyncEvery = 5 * time.Second
	// DefaultFullResyncEvery: how often a coordinator lists every node, the
	// safety net for reservations it does not know of. It also lists every
	// node when it adopts a deployment (takeover) and when its view of the
	// members changes (a partition heals: replicas another coordinator
	// placed meanwhile are the surplus to drain).
	DefaultFullResyncEvery = time.Minute
	// DefaultLearnedFor: free capacity a node reported in an answer
	// overrides the one in its record for this long (records lag by up to
	// a heartbeat and the republish rate limit).
	DefaultLearnedFor = 3 * time.Second
	// DefaultAttempts: re-plans within one step after nodes refused.
	DefaultAttempts = 3
	// DefaultCallTimeout bounds one call to a node.
	DefaultCallTimeout = 5 * time.Second
)

// Config tunes a Coordinator. Only Self is required.
type Config struct {
	// Self is this member's peer ID: the holder written into reservations
	// and the writer of statuses.
	Self string
	// HoldLease, CommitLease: see the defaults. RenewEvery is how often
	// committed leases are renewed; 0 is CommitLease/3.
	HoldLease, CommitLease, RenewEvery time.Duration
	// ResyncEvery, FullResyncEvery, LearnedFor, Attempts, CallTimeout: see
	// the defaults. FullResyncEvery equal to ResyncEvery lists every node
	// at every resync.
	ResyncEvery, FullResyncEvery, LearnedFor time.Duration
	Attempts                                 int
	CallTimeout                              time.Duration
	// FairShare orders the pool's waiting deployments of one priority
	// (fairshare.go); nil: no fair share, each coordinator claims what it
	// sees free, its own deployments by priority, then ID. YieldFor is how
	// long an owned deployment leaves capacity to those ahead of it; 0 is
	// DefaultYieldFor.
	FairShare FairShare
	YieldFor  time.Duration
	// Scheduler configures placement (policy, workload). Its Workload is
	// shared by every step so that FGD keeps learning.
	Scheduler scheduler.Config
	// Metrics, when set, counts placements and refusals.
	Metrics Metrics
}

func (c *Config) validate() error {
	if c.Self == "" {
		return fmt.Errorf("coordinator: config: Self is empty")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HoldLease, DefaultHoldLease)
	def(&c.CommitLease, DefaultCommitLease)
	def(&c.RenewEvery, c.CommitLease/3)
	def(&c.ResyncEvery, DefaultResyncEvery)
	def(&c.FullResyncEvery, DefaultFullResyncEvery)
	def(&c.LearnedFor, DefaultLearnedFor)
	def(&c.CallTimeout, DefaultCallTimeout)
	def(&c.YieldFor, DefaultYieldFor)
	if c.Attempts == 0 {
		c.Attempts = DefaultAttempts
	}
	if c.HoldLease < 0 || c.CommitLease < 0 || c.RenewEvery <= 0 || c.RenewEvery >= c.CommitLease || c.Attempts < 0 || c.YieldFor < 0 {
		return fmt.Errorf("coordinator: config: leases must be positive and RenewEvery (%v) below CommitLease (%v)", c.RenewEvery, c.CommitLease)
	}
	if c.Scheduler.Workload == nil {
		c.Scheduler.Workload = scheduler.NewWorkload()
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
	return nil
}
