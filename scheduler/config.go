package scheduler

import "fmt"

// Defaults, in one place.
const (
	// DefaultRelearnGrowth: FGD re-reads the workload once it has grown by a
	// tenth since the last read. Re-reading drops every cached score, so
	// reading at every arrival made the trace replay four times slower
	// for no measurable gain in packing (see README.md).
	DefaultRelearnGrowth = 0.1
	// DefaultMaxShapes bounds the shapes FGD measures against (the most
	// frequent ones); the cost of a score grows with it.
	DefaultMaxShapes = 256
	// DefaultFitWeight blends best-fit into FGD's score: one unit of the
	// fit score (what a node has left, 0..1) weighs as much as 50 milli-GPU
	// of fragmentation. On the Alibaba trace it took FGD from 5.1% to 4.7%
	// unallocated at 100% arrived (see scheduler/README.md).
	DefaultFitWeight = 50.0
	// DefaultScarcityWeight scales the price FGD puts on cards that
	// constrained requests need (see Pool.scarcity). On the generated mix
	// with 30% model-limited pods it took FGD from 15.9% to 3.8% unallocated
	// at 100% arrived (2 seeds; weight 1: 4.2%, 3: 3.9%; see
	// scheduler/README.md); pools whose requests carry no GPU constraints
	// are not affected.
	DefaultScarcityWeight = 2.0
)

// Config tunes a Pool. The zero value is valid: FGD, seed 0, its own
// workload, the defaults above.
type Config struct {
	// Policy ranks feasible placements; "" is FGD.
	Policy Policy
	// Seed drives the Random policy (and nothing else): the same seed, nodes
	// and requests give the same plans.
	Seed uint64
	// Workload is the learned distribution FGD measures against. Share one
	// between the pools built from successive snapshots so that learning
	// carries over; nil gives the pool a fresh one.
	Workload *Workload
	// RelearnGrowth is the growth of the workload (fraction of arrivals
	// since the last read) after which FGD reads it again. 0 is
	// DefaultRelearnGrowth; a negative value re-reads at every arrival
	// (slow on large pools, for experiments).
	RelearnGrowth float64
	// MaxShapes is how many of the most frequent shapes FGD weighs; 0 is
	// DefaultMaxShapes.
	MaxShapes int
	// FitWeight is the milli-GPU of fragmentation that one unit of the fit
	// score weighs in FGD's score: FGD picks the least growth of
	// fragmentation plus FitWeight x what the node has left (0..1). 0 is
	// DefaultFitWeight; a negative value is pure FGD (fit only breaks ties).
	FitWeight float64
	// ScarcityWeight is how much FGD's score weighs the scarcity price of
	// the cards a placement takes: one milli-GPU of a card that
	// constrained requests need as much as the rest of the pool costs 1.
	// 0 is DefaultScarcityWeight; a negative value turns it off.
	ScarcityWeight float64
}

// validate fills defaults and rejects nonsense.
func (c *Config) validate() error {
	p, err := ParsePolicy(string(c.Policy))
	if err != nil {
		return err
	}
	c.Policy = p
	if c.RelearnGrowth == 0 {
		c.RelearnGrowth = DefaultRelearnGrowth
	}
	if c.FitWeight == 0 {
		c.FitWeight = DefaultFitWeight
	}
	if c.ScarcityWeight == 0 {
		c.ScarcityWeight = DefaultScarcityWeight
	}
	if c.MaxShapes == 0 {
		c.MaxShapes = DefaultMaxShapes
	}
	if c.MaxShapes < 0 {
		return fmt.Errorf("scheduler: config: MaxShapes %d is negative", c.MaxShapes)
	}
	if c.Workload == nil {
		c.Workload = NewWorkload()
	}
	return nil
}
