package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shoalmesh/shoal/scheduler"
)

// ErrFormat: a trace file does not have the expected layout or holds a value
// that cannot be one. The *ParseError wrapping it names file, line and column.
var ErrFormat = errors.New("sim: bad trace file")

// ParseError locates a bad value in a trace file.
type ParseError struct {
	File   string
	Line   int // 1-based, the header is line 1
	Column string
	Err    error
}

func (e *ParseError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", loc, e.Line)
	}
	if e.Column != "" {
		loc = fmt.Sprintf("%s: column %s", loc, e.Column)
	}
	return fmt.Sprintf("%s: %s: %v", ErrFormat, loc, e.Err)
}

func (e *ParseError) Unwrap() []error { return []error{ErrFormat, e.Err} }

// Node is one row of a node list (columns sn,cpu_milli,memory_mib,gpu,model).
type Node struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	GPUs      int
	Model     string
}

// Pod is one row of a pod list. Only the first five columns are required;
// the others are kept when present.
type Pod struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	NumGPU    int
	GPUMilli  int      // share of each GPU, 0..1000
	GPUSpec   []string // allowed GPU models; empty is any
	QoS       string
	Phase     string
	// Times in seconds, -1 when the column is absent or empty.
	Creation, Deletion, Scheduled int64
}

// GPUMilliDemand is what the pod asks of the pool's GPUs in total.
func (p Pod) GPUMilliDemand() int64 { return int64(p.NumGPU) * int64(p.GPUMilli) }

// table reads a CSV with a header and hands out typed cells with errors that
// say where they are.
type table struct {
	file string
	r    *csv.Reader
	col  map[string]int
	row  []string
	line int
}

func newTable(r io.Reader, file string, required, optional []string) (*table, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, &ParseError{File: file, Line: 1, Err: errors.New("empty file, want a header")}
	}
	if err != nil {
		return nil, csvError(file, err)
	}
	t := &table{file: file, r: cr, col: map[string]int{}, line: 1}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := t.col[h]; dup && h != "" {
			return nil, &ParseError{File: file, Line: 1, Column: h, Err: errors.New("column appears twice")}
		}
		t.col[h] = i
	}
	for _, c := range required {
		if _, ok := t.col[c]; !ok {
			return nil, &ParseError{File: file, Line: 1, Column: c,
				Err: fmt.Errorf("missing; want columns %s", strings.Join(append(append([]string(nil), required...), optional...), ","))}
		}
	}
	return t, nil
}

func csvError(file string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ParseError{File: file, Line: pe.Line, Column: strconv.Itoa(pe.Column), Err: pe.Err}
	}
	return &ParseError{File: file, Err: err}
}

// next reads a row; false at the end.
func (t *table) next() (bool, error) {
	row, err := t.r.Read()
	if err == io.EOF {
		return false, nil
	}
	if err != nil {
		return false, csvError(t.file, err)
	}
	line, _ := t.r.FieldPos(0)
	t.row, t.line = row, line
	return true, nil
}

func (t *table) str(name string) string {
	i, ok := t.col[name]
	if !ok || i >= len(t.row) {
		return ""
	}
	return strings.TrimSpace(t.row[i])
}

func (t *table) fail(name string, format string, args ...any) error {
	return &ParseError{File: t.file, Line: t.line, Column: name, Err: fmt.Errorf(format, args...)}
}

// int reads a non-negative integer in [0, limit]; an optional column that
// is absent or empty gives def.
func (t *table) int(name string, limit int64, optional bool, def int64) (int64, error) {
	s := t.str(name)
	if s == "" {
		if optional {
			return def, nil
		}
		return 0, t.fail(name, "empty, want an integer")
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Some exports write integers as floats ("8000.0").
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != float64(int64(f)) {
			return 0, t.fail(name, "%q is not an integer", s)
		}
		v = int64(f)
	}
	if v < 0 || v > limit {
		return 0, t.fail(name, "%d outside 0..%d", v, limit)
	}
	return v, nil
}

// Limits on values, to reject garbage before it becomes a pool.
const (
	maxCPUMilli  = 1 << 40
	maxMemoryMiB = 1 << 40
	maxGPUs      = 64
)

// ReadNodes reads a node list; file names the source in errors.
func ReadNodes(r io.Reader, file string) ([]Node, error) {
	t, err := newTable(r, file, []string{"sn", "cpu_milli", "memory_mib", "gpu"}, []string{"model"})
	if err != nil {
		return nil, err
	}
	var out []Node
	seen := map[string]int{}
	for {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		n := Node{Name: t.str("sn"), Model: t.str("model")}
		if n.Name == "" {
			return nil, t.fail("sn", "empty node name")
		}
		if prev, dup := seen[n.Name]; dup {
			return nil, t.fail("sn", "node %q already on line %d", n.Name, prev)
		}
		seen[n.Name] = t.line
		if n.CPUMilli, err = t.int("cpu_milli", maxCPUMilli, false, 0); err != nil {
			return nil, err
		}
		if n.MemoryMiB, err = t.int("memory_mib", maxMemoryMiB, false, 0); err != nil {
			return nil, err
		}
		g, err := t.int("gpu", maxGPUs, false, 0)
		if err != nil {
			return nil, err
		}
		n.GPUs = int(g)
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, &ParseError{File: file, Err: errors.New("no nodes")}
	}
	return out, nil
}

// ReadPods reads a pod list; file names the source in errors.
func ReadPods(r io.Reader, file string) ([]Pod, error) {
	t, err := newTable(r, file, []string{"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"},
		[]string{"gpu_spec", "qos", "pod_phase", "creation_time", "deletion_time", "scheduled_time"})
	if err != nil {
		return nil, err
	}
	var out []Pod
	for {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		p := Pod{Name: t.str("name"), QoS: t.str("qos"), Phase: t.str("pod_phase")}
		if p.CPUMilli, err = t.int("cpu_milli", maxCPUMilli, false, 0); err != nil {
			return nil, err
		}
		if p.MemoryMiB, err = t.int("memory_mib", maxMemoryMiB, false, 0); err != nil {
			return nil, err
		}
		g, err := t.int("num_gpu", maxGPUs, false, 0)
		if err != nil {
			return nil, err
		}
		p.NumGPU = int(g)
		m, err := t.int("gpu_milli", scheduler.MilliPerGPU, false, 0)
		if err != nil {
			return nil, err
		}
		p.GPUMilli = int(m)
		switch {
		case p.NumGPU == 0:
			p.GPUMilli = 0 // a CPU-only pod holds no GPU share
		case p.GPUMilli == 0:
			return nil, t.fail("gpu_milli", "0 for a pod with %d GPUs", p.NumGPU)
		}
		if p.NumGPU == 0 && p.CPUMilli == 0 && p.MemoryMiB == 0 {
			return nil, t.fail("num_gpu", "pod %q asks for nothing", p.Name)
		}
		for _, s := range strings.Split(t.str("gpu_spec"), "|") {
			if s = strings.TrimSpace(s); s != "" {
				p.GPUSpec = append(p.GPUSpec, s)
			}
		}
		for _, c := range []struct {
			name string
			dst  *int64
		}{{"creation_time", &p.Creation}, {"deletion_time", &p.Deletion}, {"scheduled_time", &p.Scheduled}} {
			if *c.dst, err = t.int(c.name, 1<<62, true, -1); err != nil {
				return nil, err
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, &ParseError{File: file, Err: errors.New("no pods")}
	}
	return out, nil
}

// ReadNodesFile reads a node list from a file.
func ReadNodesFile(path string) ([]Node, error) {
	return readFile(path, ReadNodes)
}

// ReadPodsFile reads a pod list from a file.
func ReadPodsFile(path string) ([]Pod, error) {
	return readFile(path, ReadPods)
}

func readFile[T any](path string, read func(io.Reader, string) ([]T, error)) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return read(f, filepath.Base(path))
}

// SchedulerNodes converts a node list to scheduler nodes: every GPU free,
// named "<node>/gpu<i>".
func SchedulerNodes(ns []Node) []scheduler.Node {
	out := make([]scheduler.Node, len(ns))
	for i, n := range ns {
		sn := scheduler.Node{
			ID: n.Name, CPUMilli: n.CPUMilli, MemoryBytes: uint64(n.MemoryMiB) << 20,
			GPUs: make([]scheduler.GPU, n.GPUs),
		}
		for g := range sn.GPUs {
			sn.GPUs[g] = scheduler.GPU{UUID: fmt.Sprintf("%s/gpu%d", n.Name, g), Model: n.Model, FreeMilli: scheduler.MilliPerGPU}
		}
		out[i] = sn
	}
	return out
}

// Request converts a pod to a scheduler request (one replica, batch).
func (p Pod) Request() scheduler.Request {
	return scheduler.Request{
		ID: p.Name, GPUs: p.NumGPU, MilliGPU: p.GPUMilli, Models: p.GPUSpec,
		CPUMilli: p.CPUMilli, MemoryBytes: uint64(p.MemoryMiB) << 20,
	}
}
