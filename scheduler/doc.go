// Package scheduler owns pure placement: given a snapshot of nodes and a
// request it returns a plan (which node, which GPUs, what share of each) or
// a structured refusal that says which constraint failed and which node came
// closest.
//
// Placement is a pipeline (see README.md): feasibility filters, cheapest
// first, then a ranking policy, then tie-breaks (locality, price, node
// order). The default policy is fragmentation-aware ("fgd"): it prefers the
// placement that leaves the pool best able to fit the requests it typically
// sees, learned online from the requests that arrived (Workload). Best-fit,
// worst-fit (spread), first-fit and a seeded random policy stay selectable
// for comparison. Multi-GPU replicas prefer NVLink-joined GPUs of one node;
// gangs place all replicas or none; an inference request may evict
// lower-priority batch work when nothing else fits.
//
// The package does no I/O and reads no clock or global randomness: a Pool is
// a state machine over its own snapshot (Place decides, Commit applies), and
// the random policy draws from a seed in Config. It imports nothing of the
// project; package node converts mesh records into Node values. The trace
// replay that measures the policies lives in scheduler/sim.
package scheduler
