package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
)

// Op is one operation of the reservation protocol.
type Op string

// Operations a coordinator asks of a node.
const (
	// OpReserve holds Call.Reservation for Call.Lease, or refuses it.
	OpReserve Op = "reserve"
	// OpCommit turns held reservations (Call.IDs) into committed ones with
	// a new lease.
	OpCommit Op = "commit"
	// OpRenew extends the leases of Call.IDs.
	OpRenew Op = "renew"
	// OpRelease drops Call.IDs.
	OpRelease Op = "release"
	// OpList lists the node's reservations of Call.Deployment (all when
	// empty).
	OpList Op = "list"
)

// Reservation states, as nodes report them.
const (
	Held      = "held"
	Committed = "committed"
)

// Reservation is one slot of one replica held on one node.
type Reservation struct {
	// ID is "<replica ID>#<slot>/<slots>"; see ReplicaID.
	ID         string `json:"id"`
	Deployment string `json:"deployment"`
	// Holder is the coordinator that placed it (a peer ID).
	Holder   string `json:"holder,omitempty"`
	Priority int    `json:"priority,omitempty"`
	// Class is the work's class ("batch" or "inference"): batch work of
	// lower priority may be evicted by an inference reservation. Empty is
	// never evicted.
	Class string `json:"class,omitempty"`
	// Slot is what it takes of the node: GPU shares by UUID, CPU, memory,
	// disk. Slot.Node is the node that holds it.
	Slot    scheduler.Slot `json:"slot"`
	State   string         `json:"state,omitempty"`
	Expires time.Time      `json:"expires,omitzero"`
	// Since is when the node admitted it (as listed): the age that makes
	// evicting it costly.
	Since time.Time `json:"since,omitzero"`
}

// Call is one request to a node.
type Call struct {
	Op          Op           `json:"op"`
	Reservation *Reservation `json:"reservation,omitempty"`
	IDs         []string     `json:"ids,omitempty"`
	Deployment  string       `json:"deployment,omitempty"`
	// Lease is how long a reserve, commit or renew holds, in milliseconds.
	LeaseMillis int64 `json:"lease_ms,omitempty"`
	// Evict names reservations a reserve may evict to make room: batch
	// work of lower priority than the reservation (the node refuses the
	// reserve otherwise, and evicts nothing). Unknown IDs are skipped.
	Evict []string `json:"evict,omitempty"`
}

// Answer is a node's reply to a Call.
type Answer struct {
	// Refused says why a reserve was refused.
	Refused *Refused `json:"refused,omitempty"`
	// Unknown lists IDs of a commit or renew that the node does not hold
	// (their lease ran out, or they were never admitted).
	Unknown []string `json:"unknown,omitempty"`
	// Reservations answers a list.
	Reservations []Reservation `json:"reservations,omitempty"`
	// Evicted lists the reservations a reserve evicted.
	Evicted []string `json:"evicted,omitempty"`
	// Free is the node's unpromised capacity after the call.
	Free *Free `json:"free,omitempty"`
	// Error is a call the node could not serve at all (a malformed claim).
	Error string `json:"error,omitempty"`
}

// Refused is a node's refusal: the resource that ran short, on which GPU,
// and how much was wanted and free. It wraps ErrRefused.
type Refused struct {
	Node     string `json:"node,omitempty"`
	Resource string `json:"resource"`
	GPU      string `json:"gpu,omitempty"`
	Want     int64  `json:"want"`
	Free     int64  `json:"free"`
}

func (r *Refused) Error() string {
	where := ""
	if r.GPU != "" {
		where = " on " + r.GPU
	}
	return fmt.Sprintf("%v: node %s: %s%s: want %d, free %d", ErrRefused, r.Node, r.Resource, where, r.Want, r.Free)
}

func (r *Refused) Unwrap() error { return ErrRefused }

// Free is what a node has not promised.
type Free struct {
	GPUs        []GPUFree `json:"gpus"`
	CPUMilli    int64     `json:"cpu_milli"`
	MemoryBytes int64     `json:"memory_bytes"`
	DiskBytes   int64     `json:"disk_bytes"`
}

// GPUFree is what is left of one card.
type GPUFree struct {
	UUID      string `json:"uuid"`
	Milli     int64  `json:"milli"`
	VRAMBytes int64  `json:"vram_bytes"`
}

// Transport carries calls to nodes. node implements it over the mesh
// (/shoal/reserve/1.0.0), coordinatortest in memory. Call may be used from
// several goroutines at once; an error means the call did not reach the
// node or its answer was lost (the coordinator treats the node as unknown
// for this step and relies on leases for what it may have done).
type Transport interface {
	Call(ctx context.Context, node string, c Call) (Answer, error)
}

// View is the pool as the coordinator's member sees it.
type View interface {
	// Nodes are the alive members (this one included) as scheduler
	// snapshots, each with the free capacity it last announced.
	Nodes() []scheduler.Node
}

// apply overlays f onto n's free GPU share, VRAM, CPU and memory.
func (f *Free) apply(n *scheduler.Node) {
	byUUID := map[string]GPUFree{}
	for _, g := range f.GPUs {
		byUUID[g.UUID] = g
	}
	gpus := make([]scheduler.GPU, len(n.GPUs))
	for i, g := range n.GPUs {
		if x, ok := byUUID[g.UUID]; ok {
			g.FreeMilli = clamp(int(x.Milli), 0, scheduler.MilliPerGPU)
			if g.VRAM > 0 {
				g.FreeVRAM = uint64(clamp64(x.VRAMBytes, 0, int64(g.VRAM)))
			}
		}
		gpus[i] = g
	}
	n.GPUs = gpus
	n.CPUMilli = max(0, f.CPUMilli)
	n.MemoryBytes = uint64(max(0, f.MemoryBytes))
	n.DiskBytes = uint64(max(0, f.DiskBytes))
}

func clamp(v, lo, hi int) int { return min(max(v, lo), hi) }

func clamp64(v, lo, hi int64) int64 { return min(max(v, lo), hi) }
