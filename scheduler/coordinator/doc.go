// Package coordinator turns a desired deployment into reservations on
// nodes. Each deployment has one coordinator: the live member that
// rendezvous hashing of the deployment ID picks over the membership view
// (Owner). The coordinator places replicas with the scheduler over a
// snapshot of the pool, asks each chosen node to reserve the slot it was
// given, commits the reservations (a gang commits only once every member is
// reserved, else releases all), re-plans on refusal and renews the leases of
// what it committed. A node admits against its own ledger, the only truth
// about its capacity, so coordinators that disagree (a partition, a takeover
// under way) can never oversell a card; surplus replicas they both placed
// are drained by a deterministic rule (Surplus) once the views merge.
//
// Deployment records (Record) replicate to every member: the spec half is
// written by whoever submits, the status half by the coordinator, each half
// versioned by a Lamport counter and writer ID and merged last-writer-wins
// (Store). When a coordinator dies the next member by rendezvous finds
// itself the owner, asks the nodes which reservations they hold for the
// deployment, adopts the committed ones and finishes the placement.
//
// Under contention, fair share (Config.FairShare, fairshare.go) decides
// which waiting deployment a freed card goes to: every coordinator orders
// all waiting deployments of the pool the same way and leaves capacity to
// those ahead of its own, for at most YieldFor.
//
// The package does no I/O of its own: the network comes in through
// Transport and View, time as an argument. It must not import mesh or node;
// node adapts them to these interfaces.
package coordinator
