package hardware

import (
	"fmt"
	"strconv"
	"strings"
)

// coresPerSM is the number of FP32 CUDA cores in one streaming multiprocessor
// of a GPU with compute capability major.minor, or 0 when unknown.
//
// Sources: the throughput table "Arithmetic Instructions" (32-bit
// floating-point add, multiply, multiply-add: results per clock cycle per
// multiprocessor) of the CUDA C++ Programming Guide, and _ConvertSMVer2Cores
// in Common/helper_cuda.h of NVIDIA/cuda-samples, which agree:
//
//	2.0 Fermi GF100         32     7.0 Volta GV100          64
//	2.1 Fermi GF10x         48     7.2 Volta Xavier         64
//	3.x Kepler             192     7.5 Turing               64
//	5.x Maxwell            128     8.0 Ampere GA100         64
//	6.0 Pascal GP100        64     8.6/8.7 Ampere GA10x    128
//	6.1/6.2 Pascal GP10x   128     8.9 Ada                 128
//	9.0 Hopper             128     10.x/11.x/12.x Blackwell 128
//
// (11.0 is Jetson Thor, numbered 10.1 before CUDA 13.)
func coresPerSM(major, minor int) int {
	switch major {
	case 2:
		switch minor {
		case 0:
			return 32
		case 1:
			return 48
		}
	case 3:
		return 192
	case 5:
		return 128
	case 6:
		switch minor {
		case 0:
			return 64
		case 1, 2:
			return 128
		}
	case 7:
		switch minor {
		case 0, 2, 5:
			return 64
		}
	case 8:
		switch minor {
		case 0:
			return 64
		case 6, 7, 9:
			return 128
		}
	case 9:
		if minor == 0 {
			return 128
		}
	case 10, 11, 12:
		return 128
	}
	return 0
}

// archForCC names the architecture of compute capability major.minor, or ""
// when unknown. It is the fallback when the driver does not name it.
func archForCC(major, minor int) string {
	switch major {
	case 2:
		return "fermi"
	case 3:
		return "kepler"
	case 5:
		return "maxwell"
	case 6:
		return "pascal"
	case 7:
		if minor == 5 {
			return "turing"
		}
		return "volta"
	case 8:
		if minor == 9 {
			return "ada"
		}
		return "ampere"
	case 9:
		return "hopper"
	case 10, 11, 12:
		return "blackwell"
	}
	return ""
}

// parseCC reads a compute capability "M.m" (both parts decimal integers).
func parseCC(s string) (major, minor int, ok bool) {
	a, b, found := strings.Cut(s, ".")
	if !found || !allDigits(a) || !allDigits(b) || len(a) > 3 || len(b) > 3 {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(a)
	minor, _ = strconv.Atoi(b)
	return major, minor, true
}

func formatCC(major, minor int) string {
	return strconv.Itoa(major) + "." + strconv.Itoa(minor)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// normalizeBusID writes a PCI address the way Linux sysfs does, lower case
// with a domain of at least four hex digits ("0000:17:00.0"), so that NVML's
// "00000000:17:00.0" and a remote NVLink end's address compare equal. Input
// it cannot read comes back trimmed and lower-cased.
func normalizeBusID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	parts := strings.Split(s, ":")
	var domain, bus, devfn string
	switch len(parts) {
	case 2:
		domain, bus, devfn = "0", parts[0], parts[1]
	case 3:
		domain, bus, devfn = parts[0], parts[1], parts[2]
	default:
		return s
	}
	dev, fn, ok := strings.Cut(devfn, ".")
	if !ok {
		return s
	}
	d, err1 := strconv.ParseUint(domain, 16, 32)
	b, err2 := strconv.ParseUint(bus, 16, 8)
	v, err3 := strconv.ParseUint(dev, 16, 8)
	f, err4 := strconv.ParseUint(fn, 16, 8)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return s
	}
	return fmt.Sprintf("%04x:%02x:%02x.%x", d, b, v, f)
}
