package hardware

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
	tib = 1 << 40
)

func TestParseGPUSpec(t *testing.T) {
	tests := []struct {
		in    string
		name  string
		vram  uint64
		cores int
	}{
		{"RTX 4090:24GiB", "RTX 4090", 24 * gib, 0},
		{"RTX 3060:12GiB:3584", "RTX 3060", 12 * gib, 3584},
		{"A100 80GB:80GiB:6912", "A100 80GB", 80 * gib, 6912},
		{"  T4 : 16 GiB : 2560 ", "T4", 16 * gib, 2560},
		{"x:24gib", "x", 24 * gib, 0},
		{"x:24GIB", "x", 24 * gib, 0},
		{"x:24GB", "x", 24_000_000_000, 0},
		{"x:24 gb", "x", 24_000_000_000, 0},
		{"x:512MiB", "x", 512 * mib, 0},
		{"x:512MB", "x", 512_000_000, 0},
		{"x:1TiB", "x", tib, 0},
		{"x:2TB", "x", 2_000_000_000_000, 0},
		{"x:7.5GiB", "x", 7*gib + gib/2, 0},
		{"x:7.5GB", "x", 7_500_000_000, 0},
		{"x:0.5MiB", "x", mib / 2, 0},
		{"x:1.0000000001MiB", "x", mib, 0}, // rounds down to a whole byte
		{"x:24GiB:0", "x", 24 * gib, 0},
		{"Jetson Orin (64GB):64GiB:2048", "Jetson Orin (64GB)", 64 * gib, 2048},
		{"Quadro ü:8GiB", "Quadro ü", 8 * gib, 0},
	}
	for _, tt := range tests {
		g, err := ParseGPUSpec(tt.in)
		if err != nil {
			t.Errorf("ParseGPUSpec(%q) error %v; want nil", tt.in, err)
			continue
		}
		if g.Name != tt.name || g.VRAMTotalBytes != tt.vram || g.CUDACores != tt.cores {
			t.Errorf("ParseGPUSpec(%q) = name %q, vram %d, cores %d; want %q, %d, %d",
				tt.in, g.Name, g.VRAMTotalBytes, g.CUDACores, tt.name, tt.vram, tt.cores)
		}
		if g.Source != SourceDeclared || g.VRAMFreeBytes != g.VRAMTotalBytes {
			t.Errorf("ParseGPUSpec(%q) = source %q, free %d; want declared, free == total %d",
				tt.in, g.Source, g.VRAMFreeBytes, g.VRAMTotalBytes)
		}
	}
}

func TestParseGPUSpecErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // a piece of the message that says what was expected
	}{
		{"", "want NAME:VRAM[:CUDA_CORES]"},
		{"RTX 4090", "want NAME:VRAM[:CUDA_CORES]"},
		{"a:b:c:d", "may not contain ':'"},
		{":24GiB", "name is empty"},
		{"   :24GiB", "name is empty"},
		{"RTX\x00:24GiB", "unprintable"},
		{"RTX\xff:24GiB", "UTF-8"},
		{"RTX:24", "no unit; write 24GiB (binary) or 24GB (decimal)"},
		{"RTX:24:3584", "no unit"},
		{"RTX:7.5", "write 7.5GiB"},
		{"RTX:", "does not start with a number"},
		{"RTX:GiB", "does not start with a number"},
		{"RTX:-24GiB", "does not start with a number"},
		{"RTX:+24GiB", "does not start with a number"},
		{"RTX:24KiB", `unknown unit "KiB"`},
		{"RTX:24G", `unknown unit "G"`},
		{"RTX:24GiBs", "unknown unit"},
		{"RTX:1.2.3GiB", "is not a number"},
		{"RTX:.5GiB", "is not a number"},
		{"RTX:5.GiB", "is not a number"},
		{"RTX:0GiB", "more than zero"},
		{"RTX:0.0000000001MiB", "more than zero"},
		{"RTX:99999999999TiB", "too large"},
		{"RTX:24GiB:-5", "whole number"},
		{"RTX:24GiB:3584.5", "whole number"},
		{"RTX:24GiB:many", "whole number"},
		{"RTX:24GiB:", "empty"},
		{"RTX:24GiB:99999999999", "at most"},
	}
	for _, tt := range tests {
		g, err := ParseGPUSpec(tt.in)
		if err == nil {
			t.Errorf("ParseGPUSpec(%q) = %+v; want an error", tt.in, g)
			continue
		}
		if !errors.Is(err, ErrBadGPUSpec) {
			t.Errorf("ParseGPUSpec(%q) error %v; want one matching ErrBadGPUSpec", tt.in, err)
		}
		var se *SpecError
		if !errors.As(err, &se) || se.Spec != tt.in {
			t.Errorf("ParseGPUSpec(%q) error %#v; want a *SpecError quoting the input", tt.in, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "hardware: ") || !strings.Contains(msg, tt.want) {
			t.Errorf("ParseGPUSpec(%q) error %q; want the hardware: prefix and %q", tt.in, msg, tt.want)
		}
	}
}

func TestFormatSizeRoundTrip(t *testing.T) {
	for _, b := range []uint64{1, 999, kib, mib, 24 * gib, 7*gib + gib/2, 24_000_000_000, 1<<64 - 1, 123_456_789} {
		s := formatSize(b)
		got, problem := parseSize(s)
		if problem != "" || got != b {
			t.Errorf("parseSize(formatSize(%d) = %q) = %d, %q; want %d", b, s, got, problem, b)
		}
	}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gpus.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadGPUFile(t *testing.T) {
	path := writeFile(t, `# two kinds of card
gpus:
  - name: RTX 4090
    vram: 24GiB
    cuda_cores: 16384
    compute_capability: "8.9"
    count: 2
  - name: A100 80GB
    vram: 80 GiB
    architecture: Ampere
  - name: T4
    vram: 15.5GB
    compute_capability: 7.5
`)
	got, err := LoadGPUFile(path)
	if err != nil {
		t.Fatalf("LoadGPUFile: %v", err)
	}
	rtx := GPU{Name: "RTX 4090", VRAMTotalBytes: 24 * gib, VRAMFreeBytes: 24 * gib, CUDACores: 16384,
		ComputeCapability: "8.9", Architecture: "ada", Source: SourceDeclared}
	want := []GPU{
		rtx, rtx,
		{Name: "A100 80GB", VRAMTotalBytes: 80 * gib, VRAMFreeBytes: 80 * gib, Architecture: "ampere", Source: SourceDeclared},
		{Name: "T4", VRAMTotalBytes: 15_500_000_000, VRAMFreeBytes: 15_500_000_000, ComputeCapability: "7.5",
			Architecture: "turing", Source: SourceDeclared},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadGPUFile = %+v; want %+v", got, want)
	}
}

func TestLoadGPUFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		line    int
		field   string
		want    string
		badSpec bool
	}{
		{"unknown field", "gpus:\n  - name: x\n    vram: 8GiB\n    vrma: 8GiB\n", 4, "gpus[0].vrma", "unknown field", false},
		{"unknown top field", "gpus:\n  - name: x\n    vram: 8GiB\nnodes: 3\n", 4, "nodes", "unknown field", false},
		{"bare size", "gpus:\n  - name: a\n    vram: 8GiB\n  - name: b\n    vram: 24\n", 5, "gpus[1].vram", "no unit; write 24GiB", true},
		{"bad unit", "gpus:\n  - name: b\n    vram: 24 gigs\n", 3, "gpus[0].vram", "unknown unit", true},
		{"missing vram", "gpus:\n  - name: b\n", 2, "gpus[0].vram", "missing", false},
		{"missing name", "gpus:\n  - vram: 8GiB\n", 2, "gpus[0].name", "missing", false},
		{"empty name", "gpus:\n  - name: \"\"\n    vram: 8GiB\n", 2, "gpus[0].name", "empty", true},
		{"null name", "gpus:\n  - name:\n    vram: 8GiB\n", 2, "gpus[0].name", "empty", true},
		{"zero vram", "gpus:\n  - name: x\n    vram: 0GiB\n", 3, "gpus[0].vram", "more than zero", true},
		{"negative cores", "gpus:\n  - name: x\n    vram: 8GiB\n    cuda_cores: -1\n", 4, "gpus[0].cuda_cores", "whole number", true},
		{"fractional cores", "gpus:\n  - name: x\n    vram: 8GiB\n    cuda_cores: 2.5\n", 4, "gpus[0].cuda_cores", "whole number", true},
		{"zero count", "gpus:\n  - name: x\n    vram: 8GiB\n    count: 0\n", 4, "gpus[0].count", "from 1 to", true},
		{"huge count", "gpus:\n  - name: x\n    vram: 8GiB\n    count: 100000\n", 4, "gpus[0].count", "from 1 to", true},
		{"bad cc", "gpus:\n  - name: x\n    vram: 8GiB\n    compute_capability: eight\n", 4, "gpus[0].compute_capability", "MAJOR.MINOR", true},
		{"arch mismatch", "gpus:\n  - name: x\n    vram: 8GiB\n    compute_capability: \"8.6\"\n    architecture: hopper\n", 5, "gpus[0].architecture", "does not match", true},
		{"bad arch", "gpus:\n  - name: x\n    vram: 8GiB\n    architecture: \"Ada Lovelace\"\n", 4, "gpus[0].architecture", "want a name", true},
		{"duplicate key", "gpus:\n  - name: x\n    vram: 8GiB\n    vram: 9GiB\n", 4, "gpus[0].vram", "given twice", false},
		{"list value", "gpus:\n  - name: [a, b]\n    vram: 8GiB\n", 2, "gpus[0].name", "single value", false},
		{"entry not a mapping", "gpus:\n  - RTX 4090:24GiB\n", 2, "gpus[0]", "want a mapping", false},
		{"gpus not a list", "gpus: 3\n", 1, "gpus", "want a list", false},
		{"no gpus", "gpus: []\n", 1, "gpus", "no GPUs", false},
		{"null gpus", "gpus:\n", 1, "gpus", "no GPUs", false},
		{"missing gpus", "{}\n", 1, "gpus", "missing", false},
		{"not a mapping", "- a\n- b\n", 1, "", "want a mapping", false},
		{"empty file", "", 0, "", "empty", false},
		{"bad yaml", "gpus: [\n", 0, "", "not valid YAML", false},
	}
	for _, tt := range tests {
		path := writeFile(t, tt.text)
		_, err := LoadGPUFile(path)
		if err == nil {
			t.Errorf("%s: LoadGPUFile = nil error; want one", tt.name)
			continue
		}
		var fe *FileError
		if !errors.As(err, &fe) {
			t.Errorf("%s: LoadGPUFile error %#v; want a *FileError", tt.name, err)
			continue
		}
		if fe.Path != path || fe.Line != tt.line || fe.Field != tt.field {
			t.Errorf("%s: LoadGPUFile error at %s:%d field %q; want %s:%d field %q",
				tt.name, fe.Path, fe.Line, fe.Field, path, tt.line, tt.field)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "hardware: GPU file "+path) || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: LoadGPUFile error %q; want it to name the file and say %q", tt.name, msg, tt.want)
		}
		if tt.line > 0 && !strings.Contains(msg, path+":"+strconv.Itoa(tt.line)) {
			t.Errorf("%s: LoadGPUFile error %q; want it to name line %d", tt.name, msg, tt.line)
		}
		if !errors.Is(err, ErrBadGPUFile) || errors.Is(err, ErrBadGPUSpec) != tt.badSpec {
			t.Errorf("%s: errors.Is(err, ErrBadGPUFile, ErrBadGPUSpec) = %v, %v; want true, %v",
				tt.name, errors.Is(err, ErrBadGPUFile), errors.Is(err, ErrBadGPUSpec), tt.badSpec)
		}
	}
}

func TestLoadGPUFileMissing(t *testing.T) {
	_, err := LoadGPUFile(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrBadGPUFile) {
		t.Errorf("LoadGPUFile(missing) error %v; want one matching fs.ErrNotExist and ErrBadGPUFile", err)
	}
}

func TestAssignDeclared(t *testing.T) {
	in := []GPU{
		{Name: "RTX 4090", VRAMTotalBytes: 24 * gib, VRAMFreeBytes: 1},
		{Name: "RTX 4090", VRAMTotalBytes: 24 * gib},
		{Name: "T4", VRAMTotalBytes: 16 * gib, Source: SourceNVML},
	}
	orig := cloneGPUs(in)
	a := AssignDeclared(in, "node-1")
	b := AssignDeclared(in, "node-1")
	c := AssignDeclared(in, "node-2")
	if !reflect.DeepEqual(in, orig) {
		t.Errorf("AssignDeclared modified its input: %+v; want %+v", in, orig)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("AssignDeclared twice with one seed = %+v and %+v; want equal", a, b)
	}
	seen := map[string]bool{}
	for i, g := range a {
		if g.Index != i || g.Source != SourceDeclared || g.VRAMFreeBytes != g.VRAMTotalBytes {
			t.Errorf("AssignDeclared[%d] = index %d, source %q, free %d; want %d, declared, %d",
				i, g.Index, g.Source, g.VRAMFreeBytes, i, g.VRAMTotalBytes)
		}
		if len(g.UUID) != len("declared-")+16 || !strings.HasPrefix(g.UUID, "declared-") {
			t.Errorf("AssignDeclared[%d].UUID = %q; want declared- and 16 hex digits", i, g.UUID)
		}
		if seen[g.UUID] {
			t.Errorf("AssignDeclared[%d].UUID = %q; want it unique", i, g.UUID)
		}
		seen[g.UUID] = true
		if c[i].UUID == g.UUID {
			t.Errorf("AssignDeclared[%d].UUID is %q for both seeds; want it to depend on the seed", i, g.UUID)
		}
	}
	// A known value (computed independently), so that a change to the
	// derivation, which would give every declared GPU a new identity after an
	// upgrade, is noticed.
	if got, want := a[0].UUID, "declared-fb79bc5b3d54344c"; got != want {
		t.Errorf("AssignDeclared(..., \"node-1\")[0].UUID = %q; want %q", got, want)
	}
}

func FuzzParseGPUSpec(f *testing.F) {
	for _, s := range []string{
		"RTX 4090:24GiB", "RTX 3060:12GiB:3584", "A100 80GB:80GiB:6912", "x:7.5GiB",
		"x:24", ":24GiB", "x:0.0001MB", "x:18446744073709551615MB", "x:24GiB:", "a:b:c:d",
		"x: 1.000001 mb :7",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGPUSpec(s)
		if err != nil {
			if !errors.Is(err, ErrBadGPUSpec) || !strings.HasPrefix(err.Error(), "hardware: ") {
				t.Fatalf("ParseGPUSpec(%q) error %v; want a hardware: error matching ErrBadGPUSpec", s, err)
			}
			return
		}
		if g.Name == "" || g.Name != strings.TrimSpace(g.Name) || strings.Contains(g.Name, ":") {
			t.Fatalf("ParseGPUSpec(%q).Name = %q; want non-empty, trimmed, without ':'", s, g.Name)
		}
		if g.VRAMTotalBytes == 0 || g.VRAMFreeBytes != g.VRAMTotalBytes || g.CUDACores < 0 {
			t.Fatalf("ParseGPUSpec(%q) = vram %d free %d cores %d; want vram > 0, free == vram, cores >= 0",
				s, g.VRAMTotalBytes, g.VRAMFreeBytes, g.CUDACores)
		}
		if !strings.HasPrefix(s, g.Name) && !strings.HasPrefix(strings.TrimSpace(s), g.Name) {
			t.Fatalf("ParseGPUSpec(%q).Name = %q; want the text before the first ':'", s, g.Name)
		}
		again := g.Name + ":" + formatSize(g.VRAMTotalBytes)
		if g.CUDACores > 0 {
			again += ":" + strconv.Itoa(g.CUDACores)
		}
		g2, err := ParseGPUSpec(again)
		if err != nil {
			t.Fatalf("ParseGPUSpec(%q) (from %q) error %v; want it to parse again", again, s, err)
		}
		if !reflect.DeepEqual(g, g2) {
			t.Fatalf("ParseGPUSpec(%q) = %+v but ParseGPUSpec(%q) = %+v; want equal", s, g, again, g2)
		}
	})
}
