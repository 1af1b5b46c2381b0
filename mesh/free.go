package mesh

import (
	"reflect"
	"time"
)

// MaxFreeGPUs bounds FreeCapacity.GPUs: a node with more cards announces
// the first MaxFreeGPUs (about 100 B each on the wire).
const MaxFreeGPUs = 64

// FreeCapacity is what a node has not promised to any reservation: per GPU
// the share (milli-GPU, 0..1000) and VRAM left, and the host's CPU (milli),
// memory and disk. Coordinators plan from it; the node's own ledger still
// decides every reservation, so a stale announcement costs a refusal, never
// an oversold card. Amounts may be negative when the hardware shrank below
// what was promised.
type FreeCapacity struct {
	GPUs        []FreeGPU `json:"gpus,omitempty"`
	CPUMilli    int64     `json:"cpu_milli"`
	MemoryBytes int64     `json:"memory_bytes"`
	DiskBytes   int64     `json:"disk_bytes"`
}

// FreeGPU is what is left of one card, by UUID.
type FreeGPU struct {
	UUID      string `json:"uuid"`
	Milli     int64  `json:"milli"`
	VRAMBytes int64  `json:"vram_bytes"`
}

// SetFree replaces the free capacity this node announces in its record and
// republishes the record when it changed: a heartbeat advertises the new
// record at once (members fetch it from this node) and the DHT copy
// follows. Callers rate-limit: every change signs and sends a record.
func (n *Node) SetFree(f FreeCapacity) {
	if len(f.GPUs) > MaxFreeGPUs {
		f.GPUs = f.GPUs[:MaxFreeGPUs]
	}
	f.GPUs = append([]FreeGPU(nil), f.GPUs...)
	n.mu.Lock()
	changed := n.free == nil || !reflect.DeepEqual(*n.free, f)
	if changed {
		n.free = &f
	}
	n.mu.Unlock()
	if changed {
		n.refreshRecord(time.Now())
		n.publishSoon()
		n.beatSoon()
	}
}
