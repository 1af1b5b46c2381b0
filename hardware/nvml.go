//go:build cgo

package hardware

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is an open session with the NVIDIA driver's management library. It is
// safe for concurrent use; Close ends it.
//
// Every NVML call of the package lives in this file, so that a build without
// cgo (nvml_nocgo.go) compiles and runs with declared GPUs or none.
type NVML struct {
	mu     sync.Mutex
	lib    nvml.Interface
	has    map[string]bool // optional driver symbols, looked up once at open
	closed bool
}

// Symbols that older drivers lack. go-nvml binds every function at link time
// and a call to one the loaded libnvidia-ml lacks ends the process, so each of
// these is looked up before it is used.
const (
	symMemoryInfoV2    = "nvmlDeviceGetMemoryInfo_v2"
	symNumGpuCores     = "nvmlDeviceGetNumGpuCores"
	symArchitecture    = "nvmlDeviceGetArchitecture"
	symAttributesV2    = "nvmlDeviceGetAttributes_v2"
	symAttributes      = "nvmlDeviceGetAttributes"
	symMigMode         = "nvmlDeviceGetMigMode"
	symMaxMigDevices   = "nvmlDeviceGetMaxMigDeviceCount"
	symMigDeviceHandle = "nvmlDeviceGetMigDeviceHandleByIndex"
)

// loadMu serialises loading and unloading the library: go-nvml rebinds
// package-level function variables when it loads libnvidia-ml.
var loadMu sync.Mutex

var optionalSymbols = []string{
	symMemoryInfoV2, symNumGpuCores, symArchitecture, symAttributesV2,
	symAttributes, symMigMode, symMaxMigDevices, symMigDeviceHandle,
}

// OpenNVML loads libnvidia-ml and initialises it. Where that cannot be done
// (no driver library, kernel driver not loaded, no GPU) it returns an error
// that matches ErrNoNVML and says which; the process is unaffected and may
// run on without NVML.
func OpenNVML() (*NVML, error) {
	return openNVML(nvml.New())
}

func openNVML(lib nvml.Interface) (*NVML, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, &noNVMLError{reason: initFailure(ret), cause: ret}
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		_ = lib.Shutdown()
		return nil, &noNVMLError{reason: "counting GPUs: " + ret.Error(), cause: ret}
	}
	if count == 0 {
		_ = lib.Shutdown()
		return nil, &noNVMLError{reason: "the NVIDIA driver is loaded but sees no GPU"}
	}
	n := &NVML{lib: lib, has: make(map[string]bool, len(optionalSymbols))}
	ext := lib.Extensions()
	for _, s := range optionalSymbols {
		n.has[s] = ext != nil && ext.LookupSymbol(s) == nil
	}
	return n, nil
}

func initFailure(ret nvml.Return) string {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return "libnvidia-ml.so.1 not found (is the NVIDIA driver installed?)"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return "the NVIDIA kernel driver is not loaded"
	case nvml.ERROR_NO_PERMISSION:
		return "no permission to open the NVIDIA device files"
	case nvml.ERROR_FUNCTION_NOT_FOUND:
		return "libnvidia-ml is too old (an initialisation function is missing)"
	}
	return "initialising NVML: " + ret.Error()
}

// Close ends the NVML session. Calling it again does nothing.
func (n *NVML) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	loadMu.Lock()
	defer loadMu.Unlock()
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("hardware: NVML shutdown: %w", ret)
	}
	return nil
}

// Versions returns the driver version ("550.54.15") and the highest CUDA
// version the driver supports ("12.4"); either is "" when unknown.
func (n *NVML) Versions() (driver, cuda string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return "", ""
	}
	if v, ret := n.lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		driver = v
	}
	if v, ret := n.lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS && v > 0 {
		cuda = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	return driver, cuda
}

// GPUs measures every GPU the driver sees, in NVML index order. A field the
// device or driver cannot report (NOT_SUPPORTED and the like) stays zero. A
// device whose identity cannot be read, or that has fallen off the bus, is
// left out and named in the returned error; the others are still returned.
func (n *NVML) GPUs() ([]GPU, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("hardware: NVML is closed")
	}
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("hardware: counting GPUs: %w", ret)
	}
	gpus := make([]GPU, 0, count)
	var errs []error
	for i := 0; i < count; i++ {
		g, err := n.readDevice(i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		gpus = append(gpus, g)
	}
	resolveNVLinkPeers(gpus)
	return gpus, errors.Join(errs...)
}

// resolveNVLinkPeers names the GPU at the far end of each NVLink when it is
// one of ours (the far end may also be an NVSwitch or a CPU).
func resolveNVLinkPeers(gpus []GPU) {
	byBus := make(map[string]string, len(gpus))
	for _, g := range gpus {
		if g.BusID != "" {
			byBus[g.BusID] = g.UUID
		}
	}
	for i := range gpus {
		for j := range gpus[i].NVLinks {
			l := &gpus[i].NVLinks[j]
			if uuid, ok := byBus[l.PeerBus]; ok && l.PeerBus != "" {
				l.PeerUUID = uuid
			}
		}
	}
}

// reader collects the outcome of one device's queries. A query that fails
// leaves its field zero; only the failures that make the whole device
// unusable are kept.
type reader struct {
	fatal error
}

// ok reports whether ret is SUCCESS. A lost GPU always fails the device; a
// required query fails it unless the answer is "not supported here".
func (r *reader) ok(what string, ret nvml.Return, required bool) bool {
	if ret == nvml.SUCCESS {
		return true
	}
	if r.fatal == nil && (ret == nvml.ERROR_GPU_IS_LOST || required && !unsupported(ret)) {
		r.fatal = fmt.Errorf("%s: %w", what, ret)
	}
	return false
}

// unsupported reports whether ret means this device or driver (or this
// process's permissions) cannot answer the query at all.
func unsupported(ret nvml.Return) bool {
	switch ret {
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_NO_PERMISSION, nvml.ERROR_FUNCTION_NOT_FOUND:
		return true
	}
	return false
}

func (n *NVML) readDevice(i int) (GPU, error) {
	dev, ret := n.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("hardware: GPU %d: getting handle: %w", i, ret)
	}
	g := GPU{Index: i, Source: SourceNVML}
	var r reader

	if v, ret := dev.GetUUID(); r.ok("UUID", ret, true) {
		g.UUID = v
	}
	if g.UUID == "" && r.fatal == nil {
		// Containers are given GPUs by UUID: one without is of no use.
		r.fatal = errors.New("the driver gives no UUID")
	}
	if v, ret := dev.GetName(); r.ok("name", ret, true) {
		g.Name = v
	}

	major, minor, ret := dev.GetCudaComputeCapability()
	haveCC := r.ok("compute capability", ret, false) && major > 0
	if haveCC {
		g.ComputeCapability = formatCC(major, minor)
	}
	if n.has[symArchitecture] {
		if a, ret := dev.GetArchitecture(); r.ok("architecture", ret, false) {
			g.Architecture = archName(a)
		}
	}
	if g.Architecture == "" && haveCC {
		g.Architecture = archForCC(major, minor)
	}

	memOK := false
	if mem, ok := n.memory(dev, &r); ok {
		g.VRAMTotalBytes, g.VRAMFreeBytes, memOK = mem.total, mem.free, true
	}

	if n.has[symMigMode] {
		if cur, _, ret := dev.GetMigMode(); r.ok("MIG mode", ret, false) && cur == nvml.DEVICE_MIG_ENABLE {
			g.MIGEnabled = true
			var total, free uint64
			g.MIGInstances, total, free = n.migInstances(dev, &r)
			if !memOK {
				// Without privileges NVML gives no aggregate memory for a
				// MIG-enabled GPU; what its instances hold is what is usable.
				g.VRAMTotalBytes, g.VRAMFreeBytes = total, free
			}
		}
	}

	g.SMCount, g.CUDACores = n.cores(dev, &r, major, minor, haveCC)

	if pci, ret := dev.GetPciInfo(); r.ok("PCI info", ret, false) {
		g.BusID = busID(pci)
	}
	if v, ret := dev.GetCurrPcieLinkGeneration(); r.ok("PCIe generation", ret, false) {
		g.PCIeGen = v
	}
	if v, ret := dev.GetCurrPcieLinkWidth(); r.ok("PCIe width", ret, false) {
		g.PCIeWidth = v
	}
	g.NVLinks = nvLinks(dev, &r)

	if u, ret := dev.GetUtilizationRates(); r.ok("utilisation", ret, false) {
		g.UtilizationPct = int(u.Gpu)
	}
	if t, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); r.ok("temperature", ret, false) {
		g.TemperatureC = int(t)
	}
	if mw, ret := dev.GetPowerUsage(); r.ok("power draw", ret, false) {
		g.PowerWatts = float64(mw) / 1000
	}
	if mw, ret := dev.GetEnforcedPowerLimit(); r.ok("power limit", ret, false) {
		g.PowerLimitWatts = float64(mw) / 1000
	} else if mw, ret := dev.GetPowerManagementLimit(); r.ok("power limit", ret, false) {
		g.PowerLimitWatts = float64(mw) / 1000
	}

	if r.fatal != nil {
		if g.UUID != "" {
			return GPU{}, fmt.Errorf("hardware: GPU %d (%s): %w", i, g.UUID, r.fatal)
		}
		return GPU{}, fmt.Errorf("hardware: GPU %d: %w", i, r.fatal)
	}
	return g, nil
}

type memInfo struct{ total, free uint64 }

// memory reads total and free framebuffer memory, through
// nvmlDeviceGetMemoryInfo_v2 where the driver has it and the older call
// otherwise.
func (n *NVML) memory(dev nvml.Device, r *reader) (memInfo, bool) {
	if n.has[symMemoryInfoV2] {
		if m, ret := dev.GetMemoryInfo_v2(); ret == nvml.SUCCESS {
			return memInfo{total: m.Total, free: m.Free}, true
		} else if ret == nvml.ERROR_GPU_IS_LOST {
			r.ok("memory", ret, true)
			return memInfo{}, false
		}
	}
	if m, ret := dev.GetMemoryInfo(); r.ok("memory", ret, true) {
		return memInfo{total: m.Total, free: m.Free}, true
	}
	return memInfo{}, false
}

// cores returns the SM count and CUDA cores. The SM count comes from the
// device attributes (MultiprocessorCount); CUDA cores are SMs x cores per SM
// of the compute capability. Where the attributes are not available (NVML
// documents them for MIG handles; many drivers answer for whole GPUs too),
// nvmlDeviceGetNumGpuCores gives the CUDA cores and the SMs follow from the
// table.
func (n *NVML) cores(dev nvml.Device, r *reader, major, minor int, haveCC bool) (sm, cores int) {
	perSM := 0
	if haveCC {
		perSM = coresPerSM(major, minor)
	}
	if n.has[symAttributesV2] || n.has[symAttributes] {
		if a, ret := dev.GetAttributes(); r.ok("attributes", ret, false) {
			sm = int(a.MultiprocessorCount)
		}
	}
	if sm > 0 && perSM > 0 {
		return sm, sm * perSM
	}
	if n.has[symNumGpuCores] {
		if c, ret := dev.GetNumGpuCores(); r.ok("core count", ret, false) && c > 0 {
			if sm == 0 && perSM > 0 {
				sm = c / perSM
			}
			return sm, c
		}
	}
	return sm, 0
}

// migInstances lists the MIG devices of dev, with the sums of their total and
// free memory.
func (n *NVML) migInstances(dev nvml.Device, r *reader) (out []MIGInstance, total, free uint64) {
	if !n.has[symMaxMigDevices] || !n.has[symMigDeviceHandle] {
		return nil, 0, 0
	}
	slots, ret := dev.GetMaxMigDeviceCount()
	if !r.ok("MIG device count", ret, false) {
		return nil, 0, 0
	}
	for j := 0; j < slots; j++ {
		m, ret := dev.GetMigDeviceHandleByIndex(j)
		if ret == nvml.ERROR_NOT_FOUND || !r.ok("MIG device handle", ret, false) {
			continue // an empty slot
		}
		uuid, ret := m.GetUUID()
		if !r.ok("MIG device UUID", ret, false) {
			continue
		}
		inst := MIGInstance{UUID: uuid}
		if name, ret := m.GetName(); r.ok("MIG device name", ret, false) {
			inst.Profile = migProfile(name)
		}
		var attrs nvml.DeviceAttributes
		haveAttrs := false
		if n.has[symAttributesV2] || n.has[symAttributes] {
			var ret nvml.Return
			attrs, ret = m.GetAttributes()
			haveAttrs = r.ok("MIG device attributes", ret, false)
		}
		if haveAttrs {
			inst.SMCount = int(attrs.MultiprocessorCount)
		}
		if mem, ret := m.GetMemoryInfo(); r.ok("MIG device memory", ret, false) {
			inst.VRAMBytes = mem.Total
			free += mem.Free
		} else if haveAttrs {
			inst.VRAMBytes = attrs.MemorySizeMB << 20
		}
		total += inst.VRAMBytes
		out = append(out, inst)
	}
	return out, total, free
}

// migProfile takes the profile from a MIG device's name, which NVML gives as
// "<GPU name> MIG <profile>", e.g. "NVIDIA A100-SXM4-40GB MIG 1g.5gb".
func migProfile(name string) string {
	i := strings.LastIndex(name, "MIG ")
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(name[i+len("MIG "):])
}

// nvLinks lists the active NVLinks of dev with the PCI address of each far
// end; peers are matched to GPUs by resolveNVLinkPeers.
func nvLinks(dev nvml.Device, r *reader) []NVLink {
	var out []NVLink
	for l := 0; l < nvml.NVLINK_MAX_LINKS; l++ {
		state, ret := dev.GetNvLinkState(l)
		if !r.ok("NVLink state", ret, false) || state != nvml.FEATURE_ENABLED {
			continue
		}
		link := NVLink{Link: l}
		if pci, ret := dev.GetNvLinkRemotePciInfo(l); r.ok("NVLink remote PCI info", ret, false) {
			link.PeerBus = busID(pci)
		}
		if v, ret := dev.GetNvLinkVersion(l); r.ok("NVLink version", ret, false) {
			link.Version = nvlinkGeneration(v)
		}
		out = append(out, link)
	}
	return out
}

// nvlinkGeneration turns NVML's nvmlNvlinkVersion_t, an enumeration and not
// a version number (A100 reports 4 or 5 for NVLink 3), into the NVLink
// generation.
func nvlinkGeneration(v uint32) int {
	switch nvml.NvlinkVersion(v) {
	case nvml.NVLINK_VERSION_1_0:
		return 1
	case nvml.NVLINK_VERSION_2_0, nvml.NVLINK_VERSION_2_2:
		return 2
	case nvml.NVLINK_VERSION_3_0, nvml.NVLINK_VERSION_3_1:
		return 3
	case nvml.NVLINK_VERSION_4_0:
		return 4
	case nvml.NVLINK_VERSION_5_0:
		return 5
	case nvml.NVLINK_VERSION_6_0:
		return 6
	}
	return 0
}

// busID reads the PCI address from NVML's C string, falling back to the
// numeric fields, and normalises it.
func busID(p nvml.PciInfo) string {
	s := cString(p.BusId[:])
	if s == "" {
		s = cString(p.BusIdLegacy[:])
	}
	if s == "" {
		if p.Bus == 0 && p.Device == 0 && p.Domain == 0 {
			return ""
		}
		s = fmt.Sprintf("%08x:%02x:%02x.0", p.Domain, p.Bus, p.Device)
	}
	return normalizeBusID(s)
}

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func archName(a nvml.DeviceArchitecture) string {
	switch a {
	case nvml.DEVICE_ARCH_KEPLER:
		return "kepler"
	case nvml.DEVICE_ARCH_MAXWELL:
		return "maxwell"
	case nvml.DEVICE_ARCH_PASCAL:
		return "pascal"
	case nvml.DEVICE_ARCH_VOLTA:
		return "volta"
	case nvml.DEVICE_ARCH_TURING:
		return "turing"
	case nvml.DEVICE_ARCH_AMPERE:
		return "ampere"
	case nvml.DEVICE_ARCH_ADA:
		return "ada"
	case nvml.DEVICE_ARCH_HOPPER:
		return "hopper"
	case nvml.DEVICE_ARCH_BLACKWELL:
		return "blackwell"
	case nvml.DEVICE_ARCH_RUBIN:
		return "rubin"
	}
	return ""
}
