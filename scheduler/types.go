package scheduler

import "fmt"

// MilliPerGPU is the share of one whole GPU: requests and free capacity are
// counted in milli-GPU.
const MilliPerGPU = 1000

// ComputeCapability is a CUDA compute capability such as 8.6.
type ComputeCapability struct {
	Major, Minor int
}

// Less reports whether c is older than o.
func (c ComputeCapability) Less(o ComputeCapability) bool {
	if c.Major != o.Major {
		return c.Major < o.Major
	}
	return c.Minor < o.Minor
}

// IsZero reports whether c is unset.
func (c ComputeCapability) IsZero() bool { return c.Major == 0 && c.Minor == 0 }

func (c ComputeCapability) String() string { return fmt.Sprintf("%d.%d", c.Major, c.Minor) }

// GPU is one card of a node as the scheduler sees it.
type GPU struct {
	// UUID names the card to the runtime (the GPU UUID from NVML, or a
	// declared name); plans carry it so a container gets exactly this card.
	UUID string
	// Model is the product name used by model constraints ("A100-SXM4-80GB",
	// "RTX 4090", or a trace's "V100M32").
	Model string
	// Arch is the architecture family ("ampere", "ada", "hopper"), lower case.
	Arch string
	// Compute is the CUDA compute capability; zero when unknown.
	Compute ComputeCapability
	// VRAM is the card's memory in bytes; zero when unknown, in which case
	// VRAM requests cannot be checked and fail on this card.
	VRAM uint64
	// FreeMilli is the unallocated share of the card, 0..1000.
	FreeMilli int
	// FreeVRAM is the unallocated memory in bytes (ignored when VRAM is 0).
	FreeVRAM uint64
	// NVLink lists the indices (in Node.GPUs) of the cards this one reaches
	// over NVLink; the others are reached over PCIe.
	NVLink []int
}

// Node is a snapshot of one machine: its cards, free host resources, cached
// models, price and what runs on it. The scheduler copies it; callers keep
// ownership of theirs.
type Node struct {
	// ID is unique in a pool (the peer ID, or a trace's node name).
	ID   string
	GPUs []GPU
	// CPUMilli and MemoryBytes are the free host CPU (milli-cores) and
	// memory; DiskBytes the free disk for model weights.
	CPUMilli    int64
	MemoryBytes uint64
	DiskBytes   uint64
	// CPUCapacity and MemoryCapacity are the totals, used to tell a request
	// that cannot fit now from one that can never fit; zero means "same as
	// free".
	CPUCapacity    int64
	MemoryCapacity uint64
	// Models are the IDs of model weights already on this node's disk.
	Models []string
	// PricePerGPUHour is what the node asks for one whole GPU for an hour;
	// 0 is free.
	PricePerGPUHour float64
	// Allocations is the work running here (its shares are already taken
	// out of the free values above); preemption chooses victims from it.
	Allocations []Allocation
}

// Class says what kind of work a request or allocation is.
type Class int

const (
	// Batch work (training, offline jobs) may be evicted by inference of a
	// higher priority.
	Batch Class = iota
	// Inference serves requests; it may evict batch work, never the reverse.
	Inference
)

func (c Class) String() string {
	if c == Inference {
		return "inference"
	}
	return "batch"
}

// Allocation is work placed on a node: what it holds and what evicting it
// costs.
type Allocation struct {
	ID       string
	Class    Class
	Priority int
	// GPUs are the shares it holds (indices into Node.GPUs).
	GPUs        []GPUShare
	CPUMilli    int64
	MemoryBytes uint64
	// Cost is what evicting it loses (for example GPU-seconds of work since
	// its last checkpoint); preemption picks the cheapest set of victims.
	Cost float64
}

// Request asks for replicas of one workload.
type Request struct {
	ID string
	// Replicas to place; 0 means 1.
	Replicas int
	// GPUs per replica. 0 is a CPU-only replica.
	GPUs int
	// MilliGPU is the share of each of its GPUs, 1..1000; 0 means a whole
	// GPU, unless VRAM is set, in which case the share is VRAM's fraction of
	// the card (a 6 GiB request takes 250 milli of a 24 GiB card).
	MilliGPU int
	// VRAM is the free memory, in bytes, each of the replica's GPUs must
	// have for it (and that it takes).
	VRAM uint64
	// MinVRAM is the least total memory, in bytes, each GPU must have.
	MinVRAM uint64
	// Models, when not empty, lists the GPU models allowed.
	Models []string
	// Archs, when not empty, lists the GPU architectures allowed.
	Archs []string
	// MinCompute is the least compute capability; zero means any.
	MinCompute ComputeCapability
	// CPUMilli and MemoryBytes are host resources per replica (per node for
	// a replica that spans nodes).
	CPUMilli    int64
	MemoryBytes uint64
	// DiskBytes is the room the model's weights need on a node that does not
	// hold ModelID yet.
	DiskBytes uint64
	// ModelID names the weights; a node that caches them wins over an equal
	// one and needs no DiskBytes.
	ModelID string
	// MaxPrice is the most it pays per GPU-hour; 0 is no limit.
	MaxPrice float64
	// Class and Priority: an Inference request may evict Batch allocations
	// of lower Priority when nothing else fits.
	Class    Class
	Priority int
	// Gang places all replicas or none.
	Gang bool
	// CrossNode lets one multi-GPU replica span nodes when no single node
	// can hold it.
	CrossNode bool
}

// GPUShare is a share of one GPU of a node.
type GPUShare struct {
	Index int    `json:"index"`
	UUID  string `json:"uuid,omitempty"`
	Milli int    `json:"milli"`
	VRAM  uint64 `json:"vram,omitempty"`
}

// Slot is the part of a replica on one node.
type Slot struct {
	Node        string     `json:"node"`
	GPUs        []GPUShare `json:"gpus,omitempty"`
	CPUMilli    int64      `json:"cpu_milli,omitempty"`
	MemoryBytes uint64     `json:"memory_bytes,omitempty"`
	DiskBytes   uint64     `json:"disk_bytes,omitempty"`
}

// Replica is where one replica goes: one slot, or several when the request
// allowed a replica to span nodes.
type Replica struct {
	Slots []Slot `json:"slots"`
	// NVLink is true when all the replica's GPUs sit on one node and every
	// pair of them is joined by NVLink.
	NVLink bool `json:"nvlink,omitempty"`
}

// Eviction names an allocation to stop before the plan is applied.
type Eviction struct {
	Node       string  `json:"node"`
	Allocation string  `json:"allocation"`
	Cost       float64 `json:"cost,omitempty"`
}

// Plan is a placement decision. It changes nothing by itself: the caller
// reserves it on the nodes (or Pool.Commit applies it to a pool's view).
type Plan struct {
	Request string `json:"request,omitempty"`
	// Class and Priority are the request's, recorded with the allocations
	// that Commit makes.
	Class     Class      `json:"class"`
	Priority  int        `json:"priority,omitempty"`
	Replicas  []Replica  `json:"replicas"`
	Evictions []Eviction `json:"evictions,omitempty"`
}

// Nodes lists the distinct nodes the plan uses, in order of first use.
func (p Plan) Nodes() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range p.Replicas {
		for _, s := range r.Slots {
			if !seen[s.Node] {
				seen[s.Node] = true
				out = append(out, s.Node)
			}
		}
	}
	return out
}
