//go:build cgo

package hardware

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// TestOpenNVMLHere opens the real library. Where there is no driver (CI, this
// project's build machines) it must fail with ErrNoNVML and leave the process
// running; where there is one it must list sane GPUs.
func TestOpenNVMLHere(t *testing.T) {
	n, err := OpenNVML()
	if err != nil {
		if !errors.Is(err, ErrNoNVML) || !strings.HasPrefix(err.Error(), "hardware: NVML not available: ") {
			t.Fatalf("OpenNVML() error %q; want one matching ErrNoNVML that says why", err)
		}
		t.Logf("OpenNVML() = %v (expected without a driver)", err)
		return
	}
	defer n.Close()
	gpus, err := n.GPUs()
	if err != nil {
		t.Errorf("GPUs(): %v", err)
	}
	driver, cuda := n.Versions()
	t.Logf("driver %s, CUDA %s", driver, cuda)
	for _, g := range gpus {
		t.Logf("%+v", g)
		if g.UUID == "" || g.Name == "" || g.VRAMTotalBytes == 0 || g.Source != SourceNVML {
			t.Errorf("GPU %d = %+v; want UUID, name, VRAM and source nvml", g.Index, g)
		}
	}
}

// fakeGPU describes one device for a mock driver.
type fakeGPU struct {
	uuid, name   string
	major, minor int
	arch         nvml.DeviceArchitecture
	total, free  uint64
	sms          uint32
	numCores     int
	bus          string
	gen, width   int
	links        map[int]string // link -> remote bus ID
	linkVersion  uint32
	util, temp   uint32
	powerMW      uint32
	limitMW      uint32
	mig          []fakeMIG // non-nil: MIG enabled with these slots (zero value = empty slot)
	fail         map[string]nvml.Return
}

type fakeMIG struct {
	uuid, name  string
	total, free uint64
	sms         uint32
}

func pciInfo(bus string) nvml.PciInfo {
	var p nvml.PciInfo
	for i := 0; i < len(bus) && i < len(p.BusId)-1; i++ {
		p.BusId[i] = int8(bus[i])
	}
	return p
}

// device builds a mock device that answers every query readDevice makes; a
// query not mocked would panic and fail the test.
func (f fakeGPU) device() *mock.Device {
	r := func(what string) nvml.Return {
		if ret, ok := f.fail[what]; ok {
			return ret
		}
		return nvml.SUCCESS
	}
	d := &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return f.uuid, r("uuid") },
		GetNameFunc: func() (string, nvml.Return) { return f.name, r("name") },
		GetCudaComputeCapabilityFunc: func() (int, int, nvml.Return) {
			return f.major, f.minor, r("cc")
		},
		GetArchitectureFunc: func() (nvml.DeviceArchitecture, nvml.Return) { return f.arch, r("arch") },
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			return nvml.Memory_v2{Total: f.total, Free: f.free}, r("mem2")
		},
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: f.total, Free: f.free}, r("mem")
		},
		GetMigModeFunc: func() (int, int, nvml.Return) {
			if f.mig != nil {
				return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, r("mig")
			}
			return nvml.DEVICE_MIG_DISABLE, nvml.DEVICE_MIG_DISABLE, r("mig")
		},
		GetMaxMigDeviceCountFunc: func() (int, nvml.Return) { return len(f.mig), r("migcount") },
		GetMigDeviceHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			m := f.mig[i]
			if m.uuid == "" {
				return nil, nvml.ERROR_NOT_FOUND
			}
			return &mock.Device{
				GetUUIDFunc: func() (string, nvml.Return) { return m.uuid, nvml.SUCCESS },
				GetNameFunc: func() (string, nvml.Return) { return m.name, nvml.SUCCESS },
				GetAttributesFunc: func() (nvml.DeviceAttributes, nvml.Return) {
					return nvml.DeviceAttributes{MultiprocessorCount: m.sms, MemorySizeMB: m.total >> 20}, nvml.SUCCESS
				},
				GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
					return nvml.Memory{Total: m.total, Free: m.free}, nvml.SUCCESS
				},
			}, nvml.SUCCESS
		},
		GetAttributesFunc: func() (nvml.DeviceAttributes, nvml.Return) {
			return nvml.DeviceAttributes{MultiprocessorCount: f.sms}, r("attrs")
		},
		GetNumGpuCoresFunc:            func() (int, nvml.Return) { return f.numCores, r("cores") },
		GetPciInfoFunc:                func() (nvml.PciInfo, nvml.Return) { return pciInfo(f.bus), r("pci") },
		GetCurrPcieLinkGenerationFunc: func() (int, nvml.Return) { return f.gen, r("gen") },
		GetCurrPcieLinkWidthFunc:      func() (int, nvml.Return) { return f.width, r("width") },
		GetNvLinkStateFunc: func(l int) (nvml.EnableState, nvml.Return) {
			if ret := r("nvlink"); ret != nvml.SUCCESS {
				return 0, ret
			}
			if _, ok := f.links[l]; ok {
				return nvml.FEATURE_ENABLED, nvml.SUCCESS
			}
			if l < 18 {
				return nvml.FEATURE_DISABLED, nvml.SUCCESS
			}
			return 0, nvml.ERROR_INVALID_ARGUMENT
		},
		GetNvLinkRemotePciInfoFunc: func(l int) (nvml.PciInfo, nvml.Return) { return pciInfo(f.links[l]), nvml.SUCCESS },
		GetNvLinkVersionFunc:       func(int) (uint32, nvml.Return) { return f.linkVersion, nvml.SUCCESS },
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: f.util}, r("util")
		},
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return f.temp, r("temp")
		},
		GetPowerUsageFunc:           func() (uint32, nvml.Return) { return f.powerMW, r("power") },
		GetEnforcedPowerLimitFunc:   func() (uint32, nvml.Return) { return f.limitMW, r("limit") },
		GetPowerManagementLimitFunc: func() (uint32, nvml.Return) { return f.limitMW, r("mgmtlimit") },
	}
	return d
}

// fakeDriver is a mock NVML with the given devices; missing names driver
// symbols that are absent, and calls counts Init and Shutdown.
type fakeDriver struct {
	mock.Interface
	inits, shutdowns int
}

func newFakeDriver(initRet nvml.Return, missing []string, gpus ...fakeGPU) *fakeDriver {
	d := &fakeDriver{}
	devices := make([]nvml.Device, len(gpus))
	for i, g := range gpus {
		devices[i] = g.device()
	}
	d.InitFunc = func() nvml.Return { d.inits++; return initRet }
	d.ShutdownFunc = func() nvml.Return { d.shutdowns++; return nvml.SUCCESS }
	d.DeviceGetCountFunc = func() (int, nvml.Return) { return len(devices), nvml.SUCCESS }
	d.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i < 0 || i >= len(devices) {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		return devices[i], nvml.SUCCESS
	}
	d.ExtensionsFunc = func() nvml.ExtendedInterface {
		return &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
			for _, m := range missing {
				if m == s {
					return errors.New("undefined symbol " + s)
				}
			}
			return nil
		}}
	}
	d.SystemGetDriverVersionFunc = func() (string, nvml.Return) { return "550.54.15", nvml.SUCCESS }
	d.SystemGetCudaDriverVersionFunc = func() (int, nvml.Return) { return 12040, nvml.SUCCESS }
	return d
}

func h100(uuid, bus string, links map[int]string) fakeGPU {
	return fakeGPU{
		uuid: uuid, name: "NVIDIA H100 80GB HBM3", major: 9, minor: 0, arch: nvml.DEVICE_ARCH_HOPPER,
		total: 80 * gib, free: 79 * gib, sms: 132, bus: bus, gen: 5, width: 16,
		links: links, linkVersion: uint32(nvml.NVLINK_VERSION_4_0),
		util: 37, temp: 41, powerMW: 123_456, limitMW: 700_000,
	}
}

func TestNVMLGPUs(t *testing.T) {
	drv := newFakeDriver(nvml.SUCCESS, nil,
		h100("GPU-aaaa", "00000000:18:00.0", map[int]string{0: "00000000:2A:00.0", 1: "00000000:2A:00.0", 2: "00000000:C0:00.0"}),
		h100("GPU-bbbb", "00000000:2A:00.0", map[int]string{0: "00000000:18:00.0"}),
	)
	n, err := openNVML(drv)
	if err != nil {
		t.Fatalf("openNVML: %v", err)
	}
	gpus, err := n.GPUs()
	if err != nil {
		t.Fatalf("GPUs: %v", err)
	}
	want0 := GPU{
		Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", Architecture: "hopper",
		ComputeCapability: "9.0", VRAMTotalBytes: 80 * gib, VRAMFreeBytes: 79 * gib,
		SMCount: 132, CUDACores: 16896, PCIeGen: 5, PCIeWidth: 16, BusID: "0000:18:00.0",
		NVLinks: []NVLink{
			{Link: 0, PeerUUID: "GPU-bbbb", PeerBus: "0000:2a:00.0", Version: 4},
			{Link: 1, PeerUUID: "GPU-bbbb", PeerBus: "0000:2a:00.0", Version: 4},
			{Link: 2, PeerBus: "0000:c0:00.0", Version: 4}, // an NVSwitch, not ours
		},
		UtilizationPct: 37, TemperatureC: 41, PowerWatts: 123.456, PowerLimitWatts: 700,
		Source: SourceNVML,
	}
	if len(gpus) != 2 {
		t.Fatalf("GPUs() returned %d; want 2", len(gpus))
	}
	if !reflect.DeepEqual(gpus[0], want0) {
		t.Errorf("GPUs()[0] = %+v; want %+v", gpus[0], want0)
	}
	if got := gpus[1].NVLinks; len(got) != 1 || got[0].PeerUUID != "GPU-aaaa" {
		t.Errorf("GPUs()[1].NVLinks = %+v; want one link to GPU-aaaa", got)
	}
	if d, c := n.Versions(); d != "550.54.15" || c != "12.4" {
		t.Errorf("Versions() = %q, %q; want 550.54.15, 12.4", d, c)
	}
	if err := n.Close(); err != nil || drv.shutdowns != 1 {
		t.Errorf("Close() = %v after %d shutdowns; want nil after 1", err, drv.shutdowns)
	}
	if err := n.Close(); err != nil || drv.shutdowns != 1 {
		t.Errorf("second Close() = %v after %d shutdowns; want nil, still 1", err, drv.shutdowns)
	}
	if _, err := n.GPUs(); err == nil {
		t.Errorf("GPUs() after Close succeeded; want an error")
	}
}

func TestNVMLUnsupportedFieldsStayZero(t *testing.T) {
	ns := nvml.ERROR_NOT_SUPPORTED
	g := fakeGPU{
		uuid: "GPU-cccc", name: "NVIDIA GeForce RTX 4090", major: 8, minor: 9, total: 24 * gib, free: 20 * gib,
		numCores: 16384,
		fail: map[string]nvml.Return{
			"arch": ns, "attrs": ns, "pci": ns, "gen": ns, "width": ns, "nvlink": ns, "util": ns,
			"temp": ns, "power": ns, "limit": ns, "mgmtlimit": nvml.ERROR_NO_PERMISSION, "mig": ns, "mem2": ns,
		},
	}
	n, err := openNVML(newFakeDriver(nvml.SUCCESS, nil, g))
	if err != nil {
		t.Fatalf("openNVML: %v", err)
	}
	defer n.Close()
	gpus, err := n.GPUs()
	if err != nil {
		t.Fatalf("GPUs: %v", err)
	}
	want := GPU{
		UUID: "GPU-cccc", Name: "NVIDIA GeForce RTX 4090", Architecture: "ada", ComputeCapability: "8.9",
		VRAMTotalBytes: 24 * gib, VRAMFreeBytes: 20 * gib, SMCount: 128, CUDACores: 16384, Source: SourceNVML,
	}
	if len(gpus) != 1 || !reflect.DeepEqual(gpus[0], want) {
		t.Errorf("GPUs() = %+v; want [%+v]", gpus, want)
	}
}

func TestNVMLOldDriverSymbols(t *testing.T) {
	// A driver without the newer entry points: they must not be called (the
	// mock's v2 memory call would report different figures if it were).
	g := h100("GPU-dddd", "0000:01:00.0", nil)
	g.fail = map[string]nvml.Return{"mem2": nvml.ERROR_UNKNOWN}
	missing := []string{symMemoryInfoV2, symNumGpuCores, symArchitecture, symAttributesV2, symAttributes, symMigMode}
	drv := newFakeDriver(nvml.SUCCESS, missing, g)
	n, err := openNVML(drv)
	if err != nil {
		t.Fatalf("openNVML: %v", err)
	}
	defer n.Close()
	gpus, err := n.GPUs()
	if err != nil {
		t.Fatalf("GPUs: %v", err)
	}
	dev := drv.DeviceGetHandleByIndexFunc
	d, _ := dev(0)
	md := d.(*mock.Device)
	for name, calls := range map[string]int{
		"GetMemoryInfo_v2": len(md.GetMemoryInfo_v2Calls()),
		"GetNumGpuCores":   len(md.GetNumGpuCoresCalls()),
		"GetArchitecture":  len(md.GetArchitectureCalls()),
		"GetAttributes":    len(md.GetAttributesCalls()),
		"GetMigMode":       len(md.GetMigModeCalls()),
	} {
		if calls != 0 {
			t.Errorf("%s called %d times on a driver without it; want 0", name, calls)
		}
	}
	got := gpus[0]
	if got.VRAMTotalBytes != 80*gib || got.Architecture != "hopper" || got.SMCount != 0 || got.CUDACores != 0 {
		t.Errorf("GPU = vram %d, arch %q, SMs %d, cores %d; want %d, hopper (from 9.0), 0, 0",
			got.VRAMTotalBytes, got.Architecture, got.SMCount, got.CUDACores, uint64(80*gib))
	}
}

func TestNVMLMIG(t *testing.T) {
	g := h100("GPU-eeee", "0000:01:00.0", nil)
	g.name = "NVIDIA A100-SXM4-40GB"
	g.major, g.minor, g.arch = 8, 0, nvml.DEVICE_ARCH_AMPERE
	g.fail = map[string]nvml.Return{"mem2": nvml.ERROR_NO_PERMISSION, "mem": nvml.ERROR_NO_PERMISSION, "attrs": nvml.ERROR_NOT_SUPPORTED, "cores": nvml.ERROR_NOT_SUPPORTED}
	g.mig = []fakeMIG{
		{uuid: "MIG-1", name: "NVIDIA A100-SXM4-40GB MIG 3g.20gb", total: 19968 * mib, free: 19000 * mib, sms: 42},
		{}, // an empty slot
		{uuid: "MIG-2", name: "NVIDIA A100-SXM4-40GB MIG 1g.5gb", total: 4864 * mib, free: 4864 * mib, sms: 14},
	}
	n, err := openNVML(newFakeDriver(nvml.SUCCESS, nil, g))
	if err != nil {
		t.Fatalf("openNVML: %v", err)
	}
	defer n.Close()
	gpus, err := n.GPUs()
	if err != nil {
		t.Fatalf("GPUs: %v", err)
	}
	got := gpus[0]
	want := []MIGInstance{
		{UUID: "MIG-1", Profile: "3g.20gb", VRAMBytes: 19968 * mib, SMCount: 42},
		{UUID: "MIG-2", Profile: "1g.5gb", VRAMBytes: 4864 * mib, SMCount: 14},
	}
	if !got.MIGEnabled || !reflect.DeepEqual(got.MIGInstances, want) {
		t.Errorf("MIG = %v, %+v; want true, %+v", got.MIGEnabled, got.MIGInstances, want)
	}
	if got.VRAMTotalBytes != (19968+4864)*mib || got.VRAMFreeBytes != (19000+4864)*mib {
		t.Errorf("VRAM = %d total, %d free; want the instances' sums %d, %d",
			got.VRAMTotalBytes, got.VRAMFreeBytes, uint64((19968+4864)*mib), uint64((19000+4864)*mib))
	}
}

func TestNVMLLostGPU(t *testing.T) {
	bad := h100("GPU-lost", "0000:01:00.0", nil)
	bad.fail = map[string]nvml.Return{"temp": nvml.ERROR_GPU_IS_LOST}
	noUUID := h100("", "0000:02:00.0", nil)
	noUUID.fail = map[string]nvml.Return{"uuid": nvml.ERROR_UNKNOWN}
	emptyUUID := h100("", "0000:04:00.0", nil)
	emptyUUID.fail = map[string]nvml.Return{"uuid": nvml.ERROR_NOT_SUPPORTED}
	good := h100("GPU-good", "0000:03:00.0", nil)
	n, err := openNVML(newFakeDriver(nvml.SUCCESS, nil, bad, noUUID, good, emptyUUID))
	if err != nil {
		t.Fatalf("openNVML: %v", err)
	}
	defer n.Close()
	gpus, err := n.GPUs()
	if len(gpus) != 1 || gpus[0].UUID != "GPU-good" || gpus[0].Index != 2 {
		t.Errorf("GPUs() = %+v; want only GPU-good at index 2", gpus)
	}
	if err == nil || !errors.Is(err, nvml.ERROR_GPU_IS_LOST) || !strings.Contains(err.Error(), "GPU 0 (GPU-lost)") ||
		!strings.Contains(err.Error(), "GPU 1: UUID") || !strings.Contains(err.Error(), "GPU 3: the driver gives no UUID") {
		t.Errorf("GPUs() error %v; want it to name GPU 0 (lost), GPU 1 and GPU 3 (no UUID)", err)
	}
}

func TestOpenNVMLFailures(t *testing.T) {
	tests := []struct {
		ret  nvml.Return
		want string
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found"},
		{nvml.ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded"},
		{nvml.ERROR_NO_PERMISSION, "no permission"},
		{nvml.ERROR_UNKNOWN, "initialising NVML"},
	}
	for _, tt := range tests {
		n, err := openNVML(newFakeDriver(tt.ret, nil))
		if n != nil || !errors.Is(err, ErrNoNVML) || !errors.Is(err, tt.ret) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("openNVML(Init = %v) = %v, %v; want nil and an ErrNoNVML error saying %q", tt.ret, n, err, tt.want)
		}
	}
	drv := newFakeDriver(nvml.SUCCESS, nil) // a driver with no GPU
	n, err := openNVML(drv)
	if n != nil || !errors.Is(err, ErrNoNVML) || !strings.Contains(err.Error(), "no GPU") || drv.shutdowns != 1 {
		t.Errorf("openNVML(no GPUs) = %v, %v, %d shutdowns; want nil, ErrNoNVML saying no GPU, 1 shutdown", n, err, drv.shutdowns)
	}
}

func TestNVLinkGeneration(t *testing.T) {
	tests := []struct {
		v    nvml.NvlinkVersion
		want int
	}{
		{nvml.NVLINK_VERSION_INVALID, 0},
		{nvml.NVLINK_VERSION_1_0, 1},
		{nvml.NVLINK_VERSION_2_0, 2},
		{nvml.NVLINK_VERSION_2_2, 2},
		{nvml.NVLINK_VERSION_3_0, 3},
		{nvml.NVLINK_VERSION_3_1, 3},
		{nvml.NVLINK_VERSION_4_0, 4},
		{nvml.NVLINK_VERSION_5_0, 5},
		{nvml.NVLINK_VERSION_6_0, 6},
		{99, 0},
	}
	for _, tt := range tests {
		if got := nvlinkGeneration(uint32(tt.v)); got != tt.want {
			t.Errorf("nvlinkGeneration(%d) = %d; want %d", tt.v, got, tt.want)
		}
	}
}

func TestMIGProfile(t *testing.T) {
	tests := []struct{ in, want string }{
		{"NVIDIA A100-SXM4-40GB MIG 1g.5gb", "1g.5gb"},
		{"NVIDIA H100 80GB HBM3 MIG 1g.10gb+me", "1g.10gb+me"},
		{"NVIDIA A100-SXM4-40GB", ""},
	}
	for _, tt := range tests {
		if got := migProfile(tt.in); got != tt.want {
			t.Errorf("migProfile(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
