package hardware

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"
)

// Prober measures a node's inventory again and again from one source of GPUs
// chosen once, when it is built: the operator's declared list if there is
// one, else NVML if it opens, else none. Sources are never mixed. A Prober is
// safe for concurrent use; Close releases NVML.
type Prober struct {
	mu       sync.Mutex
	declared []GPU
	nvml     *NVML
	nvmlErr  error // why NVML is not used; nil when it is
	diskPath string
	closed   bool
}

// Probe modes, as Prober.Mode reports them.
const (
	ModeNVML     = "nvml"
	ModeDeclared = "declared"
	ModeNone     = "none"
)

// NewProber builds a Prober. With declared GPUs (pass them through
// AssignDeclared with the node's ID first) those are the node's GPUs and NVML
// is not consulted; a declared GPU left without a UUID gets one seeded with
// the hostname. Without, it opens NVML once and keeps it; where NVML is
// absent the node has no GPUs and NVMLStatus says why. diskPath is the
// directory whose filesystem's free space the inventory reports.
func NewProber(declared []GPU, diskPath string) *Prober {
	p := &Prober{diskPath: diskPath}
	if len(declared) > 0 {
		p.declared = make([]GPU, len(declared))
		copy(p.declared, declared)
		var unnamed bool
		for _, g := range declared {
			unnamed = unnamed || g.UUID == ""
		}
		if unnamed {
			host, _ := os.Hostname()
			assigned := AssignDeclared(declared, host)
			for i := range p.declared {
				if p.declared[i].UUID == "" {
					p.declared[i].UUID = assigned[i].UUID
				}
			}
		}
		for i := range p.declared {
			p.declared[i].Index = i
			p.declared[i].Source = SourceDeclared
			p.declared[i].VRAMFreeBytes = p.declared[i].VRAMTotalBytes
		}
		p.nvmlErr = ErrGPUsDeclared
		return p
	}
	p.nvml, p.nvmlErr = OpenNVML()
	return p
}

// Mode says where the GPUs come from: "nvml", "declared" or "none".
func (p *Prober) Mode() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case len(p.declared) > 0:
		return ModeDeclared
	case p.nvml != nil:
		return ModeNVML
	}
	return ModeNone
}

// NVMLStatus gives the reason NVML is not used, or nil when it is. The
// reason matches ErrNoNVML when NVML is unavailable and ErrGPUsDeclared when
// the operator declared the GPUs.
func (p *Prober) NVMLStatus() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nvmlErr
}

// Probe measures the inventory now. Declared GPUs come back as declared,
// free VRAM equal to total (allocation accounting is the caller's). On error
// (a GPU that could not be read, a disk that could not be measured) the
// Inventory still holds everything that could be measured.
func (p *Prober) Probe(ctx context.Context) (Inventory, error) {
	if err := ctx.Err(); err != nil {
		return Inventory{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Inventory{}, errors.New("hardware: prober is closed")
	}
	inv := Inventory{GPUs: []GPU{}}
	var errs []error
	switch {
	case len(p.declared) > 0:
		inv.GPUs = cloneGPUs(p.declared)
	case p.nvml != nil:
		gpus, err := p.nvml.GPUs()
		if gpus != nil {
			inv.GPUs = gpus
		}
		errs = append(errs, err)
		inv.DriverVersion, inv.CUDAVersion = p.nvml.Versions()
	}
	host, err := ProbeHost(p.diskPath)
	inv.Host = host
	errs = append(errs, err)
	inv.MeasuredAt = time.Now()
	return inv, errors.Join(errs...)
}

// Close releases NVML. Probe fails after Close; calling Close again does
// nothing.
func (p *Prober) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.nvml != nil {
		return p.nvml.Close()
	}
	return nil
}

func cloneGPUs(gpus []GPU) []GPU {
	out := make([]GPU, len(gpus))
	for i, g := range gpus {
		g.NVLinks = append([]NVLink(nil), g.NVLinks...)
		g.MIGInstances = append([]MIGInstance(nil), g.MIGInstances...)
		out[i] = g
	}
	return out
}
