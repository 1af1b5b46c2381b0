package market

import (
	"cmp"
	"math"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Weight is an identity's fair-share weight from its account:
//
//	(1 + log2(1 + served GPU-hours)) / (1 + log2(1 + consumed GPU-hours))
//
// Why this shape: an identity that has neither served nor consumed (a new
// member, or everyone in a pool that just started) weighs 1, so a free pool
// is plain fair queueing; the weight never reaches 0, so nobody starves;
// logarithms give diminishing returns, so a rack owner outweighs a desktop
// owner without owning the queue (1000 GPU-hours served weigh about 11, not
// 1000 times 1); and dividing by consumption rewards contributing more than
// one takes rather than contributing once and consuming forever. Served and
// Consumed exclude serving oneself, so self-dealing buys nothing.
func Weight(a Account) float64 {
	served := math.Max(a.Served.Hours(), 0)
	consumed := math.Max(a.Consumed.Hours(), 0)
	return (1 + math.Log2(1+served)) / (1 + math.Log2(1+consumed))
}

// Waiting is a request waiting for GPUs.
type Waiting struct {
	ID       string  // request (or replica) ID, the last tie-break
	Identity peer.ID // who deploys
	Milli    int64   // GPU share it asks for: GPUs × milli per GPU
	Arrival  uint64  // arrival order (a counter or Unix ms): earlier first
}

// Order sorts waiting requests for a contended pool by weighted
// progressive filling (dominant-resource fairness on the one resource that
// is contended, GPU share): repeatedly, the identity whose GPU share held
// (held, in milli-GPU, what its replicas run on now) plus what this order
// has already granted it, divided by its Weight, is lowest gets its
// earliest request next. Ties go to the higher weight (the limit of
// granting each an infinitesimal share first: when nobody holds anything,
// the bigger contributor still goes first), then the earlier arrival, then
// the lower request ID, then the lower identity. An identity without an
// account weighs 1. Order is pure: it copies its input and reads nothing
// else.
func Order(waiting []Waiting, accounts func(peer.ID) Account, held map[peer.ID]int64) []Waiting {
	byID := map[peer.ID]*fairQueue{}
	var qs []*fairQueue
	for _, w := range waiting {
		q, ok := byID[w.Identity]
		if !ok {
			weight := 1.0
			if accounts != nil {
				weight = Weight(accounts(w.Identity))
			}
			q = &fairQueue{id: w.Identity, weight: weight, load: max(held[w.Identity], 0)}
			byID[w.Identity] = q
			qs = append(qs, q)
		}
		q.reqs = append(q.reqs, w)
	}
	for _, q := range qs {
		slices.SortFunc(q.reqs, func(a, b Waiting) int {
			return cmp.Or(cmp.Compare(a.Arrival, b.Arrival), cmp.Compare(a.ID, b.ID))
		})
	}
	out := make([]Waiting, 0, len(waiting))
	for len(out) < len(waiting) {
		var best *fairQueue
		for _, q := range qs {
			if len(q.reqs) > 0 && (best == nil || q.before(best)) {
				best = q
			}
		}
		w := best.reqs[0]
		best.reqs = best.reqs[1:]
		best.load += max(w.Milli, 0)
		out = append(out, w)
	}
	return out
}

// fairQueue is one identity's waiting requests, earliest first.
type fairQueue struct {
	id     peer.ID
	weight float64
	load   int64 // milli-GPU held plus granted so far
	reqs   []Waiting
}

// before is the progressive-filling comparison of two non-empty queues:
// lower load per weight first, then the higher weight, then the earlier
// head request.
func (q *fairQueue) before(o *fairQueue) bool {
	a, b := float64(q.load)/q.weight, float64(o.load)/o.weight
	if a != b {
		return a < b
	}
	if q.weight != o.weight {
		return q.weight > o.weight
	}
	x, y := q.reqs[0], o.reqs[0]
	return cmp.Or(cmp.Compare(x.Arrival, y.Arrival), cmp.Compare(x.ID, y.ID), cmp.Compare(q.id, o.id)) < 0
}
