package hardware

import (
	"runtime"
	"strings"
	"testing"
)

func TestProbeHost(t *testing.T) {
	h, err := ProbeHost(t.TempDir())
	if err != nil {
		t.Fatalf("ProbeHost: %v", err)
	}
	if h.CPUCores <= 0 {
		t.Errorf("CPUCores = %d; want > 0", h.CPUCores)
	}
	if h.OS != runtime.GOOS || h.Arch != runtime.GOARCH {
		t.Errorf("OS, Arch = %q, %q; want %q, %q", h.OS, h.Arch, runtime.GOOS, runtime.GOARCH)
	}
	if runtime.GOOS == "linux" {
		if h.MemoryTotalBytes == 0 || h.MemoryFreeBytes == 0 || h.MemoryFreeBytes > h.MemoryTotalBytes {
			t.Errorf("memory total %d, free %d; want 0 < free <= total", h.MemoryTotalBytes, h.MemoryFreeBytes)
		}
		if h.DiskFreeBytes == 0 {
			t.Errorf("DiskFreeBytes = 0 for a temp dir; want > 0")
		}
	}
}

func TestProbeHostNoDisk(t *testing.T) {
	h, err := ProbeHost("")
	if err != nil || h.DiskFreeBytes != 0 {
		t.Errorf("ProbeHost(\"\") = disk %d, error %v; want 0, nil", h.DiskFreeBytes, err)
	}
}

func TestProbeHostMissingDisk(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("disk is measured on Linux")
	}
	h, err := ProbeHost("/does/not/exist")
	if err == nil || !strings.HasPrefix(err.Error(), "hardware: ") {
		t.Errorf("ProbeHost(missing) error %v; want a hardware: error", err)
	}
	if h.CPUCores <= 0 {
		t.Errorf("ProbeHost(missing).CPUCores = %d; want the rest still measured", h.CPUCores)
	}
}

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name        string
		text        string
		total, free uint64
		fail        bool
	}{
		{"modern", "MemTotal:       16318412 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\nBuffers: 10 kB\n",
			16318412 * 1024, 12000000 * 1024, false},
		{"old kernel", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 30 kB\n", 1000 * 1024, 150 * 1024, false},
		{"no total", "MemFree: 100 kB\n", 0, 0, true},
		{"junk lines", "junk\nMemTotal: x kB\nMemTotal: 2048 kB\n: 3\nMemAvailable:\n", 2048 * 1024, 0, false},
	}
	for _, tt := range tests {
		total, free, err := parseMeminfo(strings.NewReader(tt.text))
		if (err != nil) != tt.fail || total != tt.total || free != tt.free {
			t.Errorf("%s: parseMeminfo = %d, %d, %v; want %d, %d, failure %v",
				tt.name, total, free, err, tt.total, tt.free, tt.fail)
		}
	}
}
