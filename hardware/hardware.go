// Package hardware describes and measures the compute a node offers: its GPUs
// (through NVML where the driver is present, or declared by the operator where
// it is not) and its host CPU, memory and disk.
//
// It owns the inventory types that travel in node records and the probes that
// fill them. It must not publish, schedule or allocate anything; callers decide
// what to do with an inventory.
//
// A Prober picks one source of GPUs when it is built and keeps it:
//
//	declared list (ParseGPUSpec, LoadGPUFile, AssignDeclared)  -> "declared"
//	else NVML, if OpenNVML succeeds                            -> "nvml"
//	else no GPUs                                               -> "none"
//
// Sources are never mixed, and a declared GPU is never passed off as
// measured. Every NVML call sits in nvml.go, built only with cgo; without cgo
// (nvml_nocgo.go) OpenNVML fails with ErrNoNVML and everything else works.
package hardware

import "time"

// Source says where a GPU's figures came from. A declared GPU is never passed
// off as measured.
type Source string

const (
	// SourceNVML marks figures read from the NVIDIA driver through NVML.
	SourceNVML Source = "nvml"
	// SourceDeclared marks a GPU the operator declared (flag or file); its
	// figures are what was declared, not measured.
	SourceDeclared Source = "declared"
)

// NVLink is one active NVLink of a GPU and what it reaches.
type NVLink struct {
	Link     int    `json:"link"`
	PeerUUID string `json:"peer_uuid,omitempty"` // GPU on the far end, when it is one of ours
	PeerBus  string `json:"peer_bus,omitempty"`  // PCI bus ID of the far end
	Version  int    `json:"version,omitempty"`
}

// MIGInstance is one MIG GPU instance carved out of a physical GPU.
type MIGInstance struct {
	UUID      string `json:"uuid"`
	Profile   string `json:"profile,omitempty"`
	VRAMBytes uint64 `json:"vram_bytes"`
	SMCount   int    `json:"sm_count,omitempty"`
}

// GPU is one card as the pool sees it.
type GPU struct {
	Index             int           `json:"index"`
	UUID              string        `json:"uuid"`
	Name              string        `json:"name"`
	Architecture      string        `json:"architecture,omitempty"`       // e.g. "ampere", "hopper"
	ComputeCapability string        `json:"compute_capability,omitempty"` // e.g. "8.6"
	VRAMTotalBytes    uint64        `json:"vram_total_bytes"`
	VRAMFreeBytes     uint64        `json:"vram_free_bytes"`
	SMCount           int           `json:"sm_count,omitempty"`
	CUDACores         int           `json:"cuda_cores"` // SMs x cores per SM of the architecture; declared value for declared GPUs
	PCIeGen           int           `json:"pcie_gen,omitempty"`
	PCIeWidth         int           `json:"pcie_width,omitempty"`
	BusID             string        `json:"bus_id,omitempty"`
	NVLinks           []NVLink      `json:"nvlinks,omitempty"`
	MIGEnabled        bool          `json:"mig_enabled,omitempty"`
	MIGInstances      []MIGInstance `json:"mig_instances,omitempty"`
	UtilizationPct    int           `json:"utilization_pct"`
	TemperatureC      int           `json:"temperature_c,omitempty"`
	PowerWatts        float64       `json:"power_watts,omitempty"`
	PowerLimitWatts   float64       `json:"power_limit_watts,omitempty"`
	Source            Source        `json:"source"`
}

// Host is the machine around the GPUs.
type Host struct {
	Hostname         string `json:"hostname,omitempty"`
	OS               string `json:"os"`
	Arch             string `json:"arch"`
	CPUCores         int    `json:"cpu_cores"`
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	MemoryFreeBytes  uint64 `json:"memory_free_bytes"`
	DiskFreeBytes    uint64 `json:"disk_free_bytes"` // free bytes on the filesystem of the node's home dir
}

// Inventory is everything a node offers at one moment.
type Inventory struct {
	GPUs          []GPU     `json:"gpus"`
	Host          Host      `json:"host"`
	DriverVersion string    `json:"driver_version,omitempty"`
	CUDAVersion   string    `json:"cuda_version,omitempty"`
	MeasuredAt    time.Time `json:"measured_at"`
}
