package scheduler

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinels; test with errors.Is.
var (
	// ErrInvalidRequest: the request contradicts itself (negative amounts,
	// a share above 1000, a share without GPUs).
	ErrInvalidRequest = errors.New("scheduler: invalid request")
	// ErrInvalidNode: a node snapshot is inconsistent (duplicate ID, free
	// above total, NVLink to a card that does not exist).
	ErrInvalidNode = errors.New("scheduler: invalid node")
	// ErrUnknownPolicy: no ranking policy of that name.
	ErrUnknownPolicy = errors.New("scheduler: unknown policy")
	// ErrNoFit: no node can take the request now; it could fit once
	// capacity frees up. A *Refusal says why.
	ErrNoFit = errors.New("scheduler: no node fits now")
	// ErrNeverFits: no node could take the request even if it were empty;
	// waiting will not help. A *Refusal says which constraint and which node
	// came closest.
	ErrNeverFits = errors.New("scheduler: no node can ever fit")
	// ErrPartial: a request without Gang got some of its replicas placed.
	ErrPartial = errors.New("scheduler: some replicas placed")
	// ErrOversold: a plan given to Commit no longer fits the pool's view.
	ErrOversold = errors.New("scheduler: plan exceeds free capacity")
	// ErrUnknownNode: a plan names a node the pool does not hold.
	ErrUnknownNode = errors.New("scheduler: unknown node")
)

// Reason names why a node was filtered out, in pipeline order. `shoal` shows
// them to explain "why not there".
type Reason string

// Filter reasons, cheapest check first (the order of the pipeline).
const (
	ReasonPrice    Reason = "price above limit"
	ReasonGPUCount Reason = "too few GPUs"
	ReasonGPUModel Reason = "GPU model not allowed"
	ReasonGPUArch  Reason = "GPU architecture not allowed"
	ReasonCompute  Reason = "compute capability too low"
	ReasonMinVRAM  Reason = "GPU memory too small"
	ReasonCPU      Reason = "not enough free CPU"
	ReasonMemory   Reason = "not enough free memory"
	ReasonDisk     Reason = "not enough disk for weights"
	ReasonGPUFree  Reason = "not enough free GPU share"
	ReasonVRAMFree Reason = "not enough free GPU memory"
	ReasonNoNodes  Reason = "pool has no nodes"
)

// stage orders reasons: a node filtered at a later stage came closer.
var stage = map[Reason]int{
	ReasonPrice: 1, ReasonGPUCount: 2, ReasonGPUModel: 3, ReasonGPUArch: 4, ReasonCompute: 5,
	ReasonMinVRAM: 6, ReasonCPU: 7, ReasonMemory: 8, ReasonDisk: 9, ReasonGPUFree: 10, ReasonVRAMFree: 11,
}

// Refusal is the error Place returns when a request does not fit. It wraps
// ErrNoFit or ErrNeverFits.
type Refusal struct {
	Request string
	// Never is true when no node could take the request even empty.
	Never bool
	// Reason is the constraint that stopped the closest node.
	Reason Reason
	// Closest is the node that passed the most filters, and Lacked what it
	// was short of ("needs 2 GPUs with 500 milli free, has 1").
	Closest string
	Lacked  string
	// Filtered counts the nodes each reason removed.
	Filtered map[Reason]int
	// Replica is the index of the replica that did not fit (gangs and
	// multi-replica requests).
	Replica int
}

func (r *Refusal) Error() string {
	var b strings.Builder
	if r.Never {
		b.WriteString(ErrNeverFits.Error())
	} else {
		b.WriteString(ErrNoFit.Error())
	}
	if r.Request != "" {
		fmt.Fprintf(&b, " (request %s", r.Request)
		if r.Replica > 0 {
			fmt.Fprintf(&b, ", replica %d", r.Replica)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ": %s", r.Reason)
	if r.Closest != "" {
		fmt.Fprintf(&b, "; closest node %s", r.Closest)
		if r.Lacked != "" {
			fmt.Fprintf(&b, " %s", r.Lacked)
		}
	}
	if len(r.Filtered) > 0 {
		reasons := make([]Reason, 0, len(r.Filtered))
		for k := range r.Filtered {
			reasons = append(reasons, k)
		}
		sort.Slice(reasons, func(i, j int) bool { return stage[reasons[i]] < stage[reasons[j]] })
		b.WriteString(" [")
		for i, k := range reasons {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s: %d", k, r.Filtered[k])
		}
		b.WriteString("]")
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNoFit) or ErrNeverFits match.
func (r *Refusal) Is(target error) bool {
	if r.Never {
		return target == ErrNeverFits
	}
	return target == ErrNoFit
}
