package hardware

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits on declared values, to keep a typo from declaring nonsense.
const (
	maxNameLen      = 128
	maxCUDACores    = 1 << 20 // the largest GPUs today have under 25,000
	maxDeclaredEach = 1024    // the most a file's count may repeat one GPU
	maxNumberDigits = 32      // digits in a size, before the unit
)

// sizeUnits are the units a declared size may use, in lower case.
var sizeUnits = map[string]uint64{
	"mb":  1_000_000,
	"gb":  1_000_000_000,
	"tb":  1_000_000_000_000,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseGPUSpec reads a GPU declared on the command line as
// NAME:VRAM[:CUDA_CORES], for example "RTX 4090:24GiB",
// "RTX 3060:12GiB:3584" or "A100 80GB:80GiB:6912". VRAM takes a unit (GiB,
// GB, MiB, MB, TiB or TB, any case, with or without a space before it) and
// may have decimals ("7.5GiB"); CUDA_CORES is a whole number. The name may
// not contain ':'.
//
// The GPU is marked declared, with free VRAM equal to its total; Index and
// UUID are left for AssignDeclared. Errors are *SpecError and match
// ErrBadGPUSpec.
func ParseGPUSpec(s string) (GPU, error) {
	bad := func(format string, args ...any) (GPU, error) {
		return GPU{}, &SpecError{Spec: s, Problem: fmt.Sprintf(format, args...)}
	}
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return bad(`want NAME:VRAM[:CUDA_CORES], e.g. "RTX 4090:24GiB" or "RTX 3060:12GiB:3584" (a name may not contain ':')`)
	}
	name, problem := checkName(parts[0])
	if problem != "" {
		return bad("%s", problem)
	}
	vram, problem := parseSize(parts[1])
	if problem != "" {
		return bad("VRAM: %s", problem)
	}
	if vram == 0 {
		return bad("VRAM must be more than zero")
	}
	g := GPU{Name: name, VRAMTotalBytes: vram, VRAMFreeBytes: vram, Source: SourceDeclared}
	if len(parts) == 3 {
		cores, problem := parseCores(parts[2])
		if problem != "" {
			return bad("%s", problem)
		}
		g.CUDACores = cores
	}
	return g, nil
}

// checkName trims a declared name and says what is wrong with it, if
// anything.
func checkName(s string) (string, string) {
	name := strings.TrimSpace(s)
	switch {
	case name == "":
		return "", "the GPU name is empty; want a model name such as RTX 4090"
	case !utf8.ValidString(name):
		return "", "the GPU name is not valid UTF-8"
	case len(name) > maxNameLen:
		return "", fmt.Sprintf("the GPU name is longer than %d bytes", maxNameLen)
	case strings.ContainsRune(name, ':'):
		return "", "the GPU name may not contain ':'"
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return "", fmt.Sprintf("the GPU name contains the unprintable character %q", r)
		}
	}
	return name, ""
}

// parseCores reads a declared CUDA core count.
func parseCores(s string) (int, string) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, "CUDA cores are empty; want a whole number such as 3584, or leave out the third part"
	}
	if !allDigits(t) {
		return 0, fmt.Sprintf("CUDA cores %q: want a whole number such as 3584", t)
	}
	n, err := strconv.Atoi(t)
	if err != nil || n > maxCUDACores {
		return 0, fmt.Sprintf("CUDA cores %q: want at most %d", t, maxCUDACores)
	}
	return n, ""
}

// parseSize reads a size such as "24GiB", "7.5 GiB" or "80GB" into bytes,
// rounding down to a whole byte. It says what is wrong, if anything; a zero
// size is not its concern.
func parseSize(s string) (uint64, string) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, fmt.Sprintf("%q does not start with a number; want a size such as 24GiB or 80GB", t)
	}
	whole, frac, hasDot := strings.Cut(num, ".")
	if !allDigits(whole) || hasDot && !allDigits(frac) {
		return 0, fmt.Sprintf("%q: %q is not a number such as 24 or 7.5", t, num)
	}
	if len(num) > maxNumberDigits {
		return 0, fmt.Sprintf("%q: the number is too long", t)
	}
	if unit == "" {
		return 0, fmt.Sprintf("%q has no unit; write %sGiB (binary) or %sGB (decimal)", t, num, num)
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Sprintf("%q: unknown unit %q; want GiB, GB, MiB, MB, TiB or TB", t, unit)
	}
	// bytes = (whole.frac) * mult, exactly, then rounded down.
	n, _ := new(big.Int).SetString(whole+frac, 10)
	n.Mul(n, new(big.Int).SetUint64(mult))
	n.Quo(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
	if !n.IsUint64() {
		return 0, fmt.Sprintf("%q is too large", t)
	}
	return n.Uint64(), ""
}

// formatSize writes bytes so that parseSize reads back exactly the same
// number: whole GiB or MiB where it can, decimal megabytes otherwise.
func formatSize(b uint64) string {
	switch {
	case b%(1<<30) == 0:
		return strconv.FormatUint(b>>30, 10) + "GiB"
	case b%(1<<20) == 0:
		return strconv.FormatUint(b>>20, 10) + "MiB"
	}
	s := strconv.FormatUint(b/1_000_000, 10)
	if frac := strings.TrimRight(fmt.Sprintf("%06d", b%1_000_000), "0"); frac != "" {
		s += "." + frac
	}
	return s + "MB"
}

// AssignDeclared numbers declared GPUs and gives each a stable UUID,
// "declared-" and 16 hex digits of sha256(seed, index, name), so that a node
// started again with the same seed (its ID) and the same list declares the
// same UUIDs. It marks them declared with free VRAM equal to total. The input
// is not modified.
func AssignDeclared(gpus []GPU, seed string) []GPU {
	out := make([]GPU, len(gpus))
	for i, g := range gpus {
		g.Index = i
		g.Source = SourceDeclared
		g.VRAMFreeBytes = g.VRAMTotalBytes
		g.UUID = declaredUUID(seed, i, g.Name)
		g.NVLinks = append([]NVLink(nil), g.NVLinks...)
		g.MIGInstances = append([]MIGInstance(nil), g.MIGInstances...)
		out[i] = g
	}
	return out
}

func declaredUUID(seed string, index int, name string) string {
	h := sha256.New()
	// Length-prefixed so that no two (seed, index, name) write the same bytes.
	for _, part := range []string{seed, strconv.Itoa(index), name} {
		fmt.Fprintf(h, "%d:%s", len(part), part)
	}
	return "declared-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// gpuFileFields are the keys a GPU entry of a declaration file may have.
var gpuFileFields = map[string]bool{
	"name": true, "vram": true, "cuda_cores": true,
	"architecture": true, "compute_capability": true, "count": true,
}

// LoadGPUFile reads GPUs declared in a YAML file:
//
//	gpus:
//	  - name: RTX 4090
//	    vram: 24GiB
//	    cuda_cores: 16384          # optional
//	    architecture: ada          # optional; follows from compute_capability
//	    compute_capability: "8.9"  # optional
//	    count: 2                   # optional, default 1: this many such GPUs
//
// Unknown fields are errors. Errors are *FileError, name the file, line and
// field, and match ErrBadGPUFile (and ErrBadGPUSpec for a bad value). The
// GPUs are marked declared; Index and UUID are left for AssignDeclared.
func LoadGPUFile(path string) ([]GPU, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{Path: path, Problem: "cannot read it", cause: err}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &FileError{Path: path, Problem: "not valid YAML: " + err.Error()}
	}
	return gpusFromYAML(path, &doc)
}

func gpusFromYAML(path string, doc *yaml.Node) ([]GPU, error) {
	fail := func(n *yaml.Node, field, format string, args ...any) *FileError {
		e := &FileError{Path: path, Field: field, Problem: fmt.Sprintf(format, args...)}
		if n != nil {
			e.Line = n.Line
		}
		return e
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, fail(nil, "", "empty; want a gpus: list")
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, fail(root, "", "want a mapping with a gpus: list")
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], deref(root.Content[i+1])
		switch {
		case k.Value != "gpus":
			return nil, fail(k, k.Value, "unknown field; the file holds only gpus:")
		case list != nil:
			return nil, fail(k, "gpus", "given twice")
		}
		list = v
	}
	if list == nil {
		return nil, fail(root, "gpus", "missing")
	}
	if list.Kind == yaml.ScalarNode && list.Tag == "!!null" {
		return nil, fail(list, "gpus", "no GPUs declared")
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fail(list, "gpus", "want a list of GPUs")
	}
	if len(list.Content) == 0 {
		return nil, fail(list, "gpus", "no GPUs declared")
	}
	var gpus []GPU
	for i, item := range list.Content {
		item = deref(item)
		field := fmt.Sprintf("gpus[%d]", i)
		g, count, err := gpuFromYAML(item, field, fail)
		if err != nil {
			return nil, err
		}
		for range count {
			gpus = append(gpus, g)
		}
	}
	return gpus, nil
}

// gpuFromYAML reads one entry of a declaration file and how many times it
// repeats.
func gpuFromYAML(item *yaml.Node, field string, fail func(*yaml.Node, string, string, ...any) *FileError) (GPU, int, error) {
	badValue := func(n *yaml.Node, f, format string, args ...any) *FileError {
		err := fail(n, f, format, args...)
		err.badSpec = true
		return err
	}
	if item.Kind != yaml.MappingNode {
		return GPU{}, 0, fail(item, field, "want a mapping with name and vram")
	}
	values := map[string]*yaml.Node{}
	for j := 0; j+1 < len(item.Content); j += 2 {
		k, v := item.Content[j], deref(item.Content[j+1])
		f := field + "." + k.Value
		switch {
		case !gpuFileFields[k.Value]:
			return GPU{}, 0, fail(k, f, "unknown field; want name, vram, cuda_cores, architecture, compute_capability or count")
		case values[k.Value] != nil:
			return GPU{}, 0, fail(k, f, "given twice")
		case v.Kind != yaml.ScalarNode:
			return GPU{}, 0, fail(v, f, "want a single value")
		}
		values[k.Value] = v
	}
	scalar := func(key string) (string, *yaml.Node) {
		v := values[key]
		if v == nil || v.Tag == "!!null" {
			return "", v
		}
		return v.Value, v
	}

	g := GPU{Source: SourceDeclared}
	s, n := scalar("name")
	if n == nil {
		return GPU{}, 0, fail(item, field+".name", "missing")
	}
	name, problem := checkName(s)
	if problem != "" {
		return GPU{}, 0, badValue(n, field+".name", "%s", problem)
	}
	g.Name = name

	s, n = scalar("vram")
	if n == nil {
		return GPU{}, 0, fail(item, field+".vram", "missing")
	}
	vram, problem := parseSize(s)
	if problem != "" {
		return GPU{}, 0, badValue(n, field+".vram", "%s", problem)
	}
	if vram == 0 {
		return GPU{}, 0, badValue(n, field+".vram", "must be more than zero")
	}
	g.VRAMTotalBytes, g.VRAMFreeBytes = vram, vram

	if s, n = scalar("cuda_cores"); n != nil {
		cores, problem := parseCores(s)
		if problem != "" {
			return GPU{}, 0, badValue(n, field+".cuda_cores", "%s", problem)
		}
		g.CUDACores = cores
	}

	var ccMajor, ccMinor int
	haveCC := false
	if s, n = scalar("compute_capability"); n != nil {
		t := strings.TrimSpace(s)
		ccMajor, ccMinor, haveCC = parseCC(t)
		if !haveCC || ccMajor == 0 {
			return GPU{}, 0, badValue(n, field+".compute_capability", "%q: want MAJOR.MINOR such as \"8.6\"", t)
		}
		g.ComputeCapability = formatCC(ccMajor, ccMinor)
	}

	if s, n = scalar("architecture"); n != nil {
		arch := strings.ToLower(strings.TrimSpace(s))
		if !validArch(arch) {
			return GPU{}, 0, badValue(n, field+".architecture", "%q: want a name such as ampere, ada or hopper", s)
		}
		if want := archForCC(ccMajor, ccMinor); haveCC && want != "" && want != arch {
			return GPU{}, 0, badValue(n, field+".architecture", "%q does not match compute capability %s (%s)", arch, g.ComputeCapability, want)
		}
		g.Architecture = arch
	} else if haveCC {
		g.Architecture = archForCC(ccMajor, ccMinor)
	}

	count := 1
	if s, n = scalar("count"); n != nil {
		t := strings.TrimSpace(s)
		c, err := strconv.Atoi(t)
		if !allDigits(t) || err != nil || c < 1 || c > maxDeclaredEach {
			return GPU{}, 0, badValue(n, field+".count", "%q: want a whole number from 1 to %d", t, maxDeclaredEach)
		}
		count = c
	}
	return g, count, nil
}

func validArch(s string) bool {
	if s == "" || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// deref follows a YAML alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
