// Package scheduler will own pure placement (feasibility, fragmentation-aware
// ranking, locality, topology, gangs, preemption) and the coordinator that
// turns a desired deployment into reservations. Placement functions take a
// snapshot and return a plan; they do no I/O. Nothing is implemented yet; see
// docs/ARCHITECTURE.md.
package scheduler
