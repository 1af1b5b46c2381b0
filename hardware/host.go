package hardware

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// ProbeHost measures the machine around the GPUs: hostname, OS and
// architecture, CPU cores usable by this process, memory (from /proc/meminfo
// on Linux; zero elsewhere) and free disk bytes on the filesystem holding
// diskPath (zero when diskPath is "").
//
// On error the returned Host still holds everything that could be measured.
func ProbeHost(diskPath string) (Host, error) {
	h := Host{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUCores: runtime.NumCPU()}
	if name, err := os.Hostname(); err == nil {
		h.Hostname = name
	}
	if runtime.GOOS == "linux" {
		f, err := os.Open("/proc/meminfo")
		if err != nil {
			return h, fmt.Errorf("hardware: reading memory size: %w", err)
		}
		h.MemoryTotalBytes, h.MemoryFreeBytes, err = parseMeminfo(f)
		f.Close()
		if err != nil {
			return h, fmt.Errorf("hardware: reading /proc/meminfo: %w", err)
		}
	}
	if diskPath != "" {
		free, err := diskFree(diskPath)
		if err != nil {
			return h, fmt.Errorf("hardware: free space on %s: %w", diskPath, err)
		}
		h.DiskFreeBytes = free
	}
	return h, nil
}

// parseMeminfo reads total and available memory in bytes from the text of
// /proc/meminfo. Available is MemAvailable, or on kernels older than 3.14
// MemFree + Buffers + Cached.
func parseMeminfo(r io.Reader) (total, available uint64, err error) {
	fields := map[string]uint64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			v *= 1024
		}
		fields[key] = v
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	total, ok := fields["MemTotal"]
	if !ok {
		return 0, 0, fmt.Errorf("no MemTotal line")
	}
	available, ok = fields["MemAvailable"]
	if !ok {
		available = fields["MemFree"] + fields["Buffers"] + fields["Cached"]
	}
	return total, available, nil
}
