package dashboard

import (
	"time"

	"github.com/shoalmesh/shoal/market"
)

// The JSON bodies of /api/dashboard/*. The page is their only intended
// reader; scripts should prefer the control API (`shoal ... -o json`).

// GPU sources as the dashboard and the metrics name them.
const (
	SourceMeasured = "measured" // read from the driver (NVML)
	SourceDeclared = "declared" // declared by the operator; nothing measured
)

// Self is the node serving the dashboard.
type Self struct {
	PeerID  string `json:"peer_id"`
	Name    string `json:"name,omitempty"`
	PoolID  string `json:"pool_id"`
	Version string `json:"version,omitempty"`
}

// Summary is GET /api/dashboard/summary.
type Summary struct {
	Self
	// Alive and Members count the members this node knows of.
	Alive   int `json:"alive"`
	Members int `json:"members"`
	// GPUs, VRAMTotalBytes and VRAMUsedBytes sum the alive members' cards.
	GPUs           int    `json:"gpus"`
	VRAMTotalBytes uint64 `json:"vram_total_bytes"`
	VRAMUsedBytes  uint64 `json:"vram_used_bytes"`
	Deployments    int    `json:"deployments"`
	// RefreshMillis is how often the page polls.
	RefreshMillis int64 `json:"refresh_ms"`
	// Auth says whether the API needs a key.
	Auth bool      `json:"auth"`
	Now  time.Time `json:"now"`
}

// Node is one member of GET /api/dashboard/nodes.
type Node struct {
	PeerID   string    `json:"peer_id"`
	Name     string    `json:"name,omitempty"`
	State    string    `json:"state"` // alive, suspect, dead or left
	Self     bool      `json:"self"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Version  string    `json:"version,omitempty"`
	CPUCores int       `json:"cpu_cores,omitempty"`
	CPULoad1 float64   `json:"cpu_load1,omitempty"`
	// MemoryTotalBytes and MemoryFreeBytes are the host's RAM.
	MemoryTotalBytes uint64 `json:"memory_total_bytes,omitempty"`
	MemoryFreeBytes  uint64 `json:"memory_free_bytes,omitempty"`
	GPUs             []GPU  `json:"gpus"`
	// Models counts the models it holds complete.
	Models int `json:"models"`
}

// GPU is one card of a Node.
type GPU struct {
	Index int    `json:"index"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
	// VRAMUsedBytes is what the driver reports in use (always 0 for a
	// declared card: nothing measures it).
	VRAMTotalBytes uint64 `json:"vram_total_bytes"`
	VRAMUsedBytes  uint64 `json:"vram_used_bytes"`
	UtilizationPct int    `json:"utilization_pct"`
	// ReservedMilli (0..1000 of the card) and ReservedVRAMBytes are what
	// the node's ledger promised to replicas, from its last announcement;
	// Reserved is false when it announced none.
	Reserved          bool   `json:"reserved"`
	ReservedMilli     int64  `json:"reserved_milli"`
	ReservedVRAMBytes uint64 `json:"reserved_vram_bytes"`
	CUDACores         int    `json:"cuda_cores,omitempty"`
	TemperatureC      int    `json:"temperature_c,omitempty"`
	Source            string `json:"source"` // SourceMeasured or SourceDeclared
}

// Deployment is one element of GET /api/dashboard/deployments.
type Deployment struct {
	Name     string `json:"name"`
	Template string `json:"template,omitempty"`
	// State is the coordinator's (submitted, queued, placed, failed), or
	// cold for a scale-to-zero deployment placed with no replica.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Warmth is cold (no replica), starting (replicas, none ready) or
	// warm (a replica is ready).
	Warmth      string `json:"warmth"`
	Desired     int    `json:"desired"`
	ScaleToZero bool   `json:"scale_to_zero,omitempty"`
	Coordinator string `json:"coordinator,omitempty"`
	// InFlight is the requests this node's gateway holds for it (waiting
	// or being answered); Waiting the requests the pool's gateways queue
	// for a replica.
	InFlight int       `json:"in_flight"`
	Waiting  int       `json:"waiting"`
	Replicas []Replica `json:"replicas"`
}

// Replica is one replica of a Deployment.
type Replica struct {
	ID       string   `json:"id"`
	Node     string   `json:"node"`
	NodeName string   `json:"node_name,omitempty"`
	GPUs     []string `json:"gpus,omitempty"`
	// State is the node's report (starting, ready, backoff, failed,
	// stopping), or placed before the node reported it.
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	InFlight int    `json:"in_flight"`
}

// Weights is GET /api/dashboard/weights.
type Weights struct {
	Models    []Model    `json:"models"`
	Transfers []Transfer `json:"transfers"`
}

// Model is one model the pool knows of.
type Model struct {
	ID        string   `json:"id"`
	Name      string   `json:"name,omitempty"`
	SizeBytes int64    `json:"size_bytes"`
	Holders   []Holder `json:"holders"`
}

// Holder is a node that holds a model.
type Holder struct {
	PeerID string `json:"peer_id"`
	Name   string `json:"name,omitempty"`
	State  string `json:"state"` // complete, or partial (only this node tells)
	Pins   int    `json:"pins,omitempty"`
}

// Transfer is a model on its way to a node.
type Transfer struct {
	Node      string `json:"node"`
	NodeName  string `json:"node_name,omitempty"`
	Model     string `json:"model"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
	// For says why: the replica that waits for it, or "cache" for a
	// partial copy in this node's cache (a pull under way or interrupted).
	For string `json:"for"`
}

// Credits is GET /api/dashboard/credits.
type Credits struct {
	Available bool           `json:"available"`
	Reason    string         `json:"reason,omitempty"` // why not, when not available
	Report    *market.Report `json:"report,omitempty"`
}
