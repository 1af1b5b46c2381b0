package hardware

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestProberDeclared(t *testing.T) {
	g1, _ := ParseGPUSpec("RTX 4090:24GiB:16384")
	g2, _ := ParseGPUSpec("RTX 3060:12GiB")
	declared := AssignDeclared([]GPU{g1, g2}, "node-1")
	p := NewProber(declared, t.TempDir())
	defer p.Close()

	if got := p.Mode(); got != ModeDeclared {
		t.Errorf("Mode() = %q; want %q", got, ModeDeclared)
	}
	if err := p.NVMLStatus(); !errors.Is(err, ErrGPUsDeclared) {
		t.Errorf("NVMLStatus() = %v; want ErrGPUsDeclared", err)
	}
	before := time.Now()
	inv, err := p.Probe(context.Background())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if len(inv.GPUs) != 2 {
		t.Fatalf("Probe found %d GPUs; want 2", len(inv.GPUs))
	}
	for i, g := range inv.GPUs {
		if g.Source != SourceDeclared || g.UUID != declared[i].UUID || g.VRAMFreeBytes != g.VRAMTotalBytes {
			t.Errorf("GPU %d = source %q, uuid %q, free %d; want declared, %q, %d",
				i, g.Source, g.UUID, g.VRAMFreeBytes, declared[i].UUID, g.VRAMTotalBytes)
		}
	}
	if inv.DriverVersion != "" || inv.CUDAVersion != "" {
		t.Errorf("versions = %q, %q; want none for declared GPUs", inv.DriverVersion, inv.CUDAVersion)
	}
	if inv.MeasuredAt.Before(before) || inv.Host.CPUCores <= 0 {
		t.Errorf("MeasuredAt %v, CPUCores %d; want a fresh time and a measured host", inv.MeasuredAt, inv.Host.CPUCores)
	}

	// The inventory is a copy: changing it does not change the next one.
	inv.GPUs[0].VRAMFreeBytes = 0
	inv2, _ := p.Probe(context.Background())
	if inv2.GPUs[0].VRAMFreeBytes != inv2.GPUs[0].VRAMTotalBytes {
		t.Errorf("second Probe free VRAM = %d; want %d", inv2.GPUs[0].VRAMFreeBytes, inv2.GPUs[0].VRAMTotalBytes)
	}
}

func TestProberDeclaredWithoutUUIDs(t *testing.T) {
	g, _ := ParseGPUSpec("T4:16GiB")
	g.VRAMFreeBytes = 1
	p := NewProber([]GPU{g, g}, "")
	defer p.Close()
	inv, err := p.Probe(context.Background())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	a, b := inv.GPUs[0], inv.GPUs[1]
	if a.UUID == "" || a.UUID == b.UUID || a.Index != 0 || b.Index != 1 || a.VRAMFreeBytes != a.VRAMTotalBytes {
		t.Errorf("GPUs = %+v, %+v; want distinct UUIDs, indexes 0 and 1, free == total", a, b)
	}
}

func TestProberNone(t *testing.T) {
	p := NewProber(nil, t.TempDir())
	defer p.Close()
	if p.NVMLStatus() == nil {
		t.Skip("this machine has NVML; the no-GPU path cannot be seen here")
	}
	if !errors.Is(p.NVMLStatus(), ErrNoNVML) {
		t.Errorf("NVMLStatus() = %v; want ErrNoNVML", p.NVMLStatus())
	}
	if got := p.Mode(); got != ModeNone {
		t.Errorf("Mode() = %q; want %q", got, ModeNone)
	}
	inv, err := p.Probe(context.Background())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if inv.GPUs == nil || len(inv.GPUs) != 0 {
		t.Errorf("Probe GPUs = %#v; want an empty, non-nil list", inv.GPUs)
	}
	if inv.Host.CPUCores <= 0 {
		t.Errorf("Probe Host.CPUCores = %d; want > 0", inv.Host.CPUCores)
	}
}

func TestProberClosedAndCancelled(t *testing.T) {
	g, _ := ParseGPUSpec("T4:16GiB")
	p := NewProber(AssignDeclared([]GPU{g}, "n"), "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Probe(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Probe(cancelled) error %v; want context.Canceled", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v; want nil", err)
	}
	if _, err := p.Probe(context.Background()); err == nil {
		t.Errorf("Probe after Close succeeded; want an error")
	}
}
