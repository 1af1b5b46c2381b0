package coordinator

// Metrics receives what placement did, for the daemon's /metrics. The
// coordinator calls it from Step, one call at a time; an implementation
// must not block. Reasons are the scheduler's named refusal reasons, or
// "node: " and the resource a node's ledger refused (or "unreachable"):
// the resource comes from the node's answer, so an implementation that
// turns reasons into labels should bound how many it keeps.
type Metrics interface {
	// Placed counts replicas committed by a placement under policy.
	Placed(policy string, replicas int)
	// Refused counts one placement attempt that stopped for reason: a
	// node refused a reservation, or the scheduler found no place for
	// the replicas still missing (a queued deployment is tried again at
	// every step, and counted each time).
	Refused(reason string)
}

// noMetrics is the Metrics of a coordinator configured without any.
type noMetrics struct{}

func (noMetrics) Placed(string, int) {}
func (noMetrics) Refused(string)     {}
