package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessConfig configures the process backend.
type ProcessConfig struct {
	// Dir holds each replica's log (<id>.log) and state (<id>.json); it is
	// created with mode 0700. Typically <home>/replicas. Required.
	Dir string
	// Owner is this node's ID, recorded with every replica; List returns
	// only replicas of this owner. Required.
	Owner string
	// Env is the base environment of every replica; nil means this
	// process's environment. The backend's variables and Spec.Env follow.
	Env []string
	// PollInterval is how often Wait and Stop look at a process; default
	// 20 ms. Shorter notices exits sooner at the cost of wakeups.
	PollInterval time.Duration
}

func (c *ProcessConfig) validate() error {
	if c.Dir == "" || c.Owner == "" {
		return fmt.Errorf("%w: process backend needs a directory and an owner", ErrInvalidSpec)
	}
	if c.Env == nil {
		c.Env = os.Environ()
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 20 * time.Millisecond
	}
	return nil
}

// Process runs each replica as a command in its own process group, with
// GPU visibility through CUDA_VISIBLE_DEVICES and its output in a log file.
// Processes outlive the daemon; a restarted daemon finds them through their
// state files (List) and adopts or removes them. It uses no goroutines:
// exits are collected when Inspect, Wait or Stop look.
type Process struct {
	cfg ProcessConfig

	mu       sync.Mutex
	children map[string]int // replica ID → pid of a child of this process, not yet reaped
	reaped   map[string]int // replica ID → exit code of a child reaped here
}

var _ Backend = (*Process)(nil)

// NewProcess returns a process backend.
func NewProcess(cfg ProcessConfig) (*Process, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("runtime: replica directory: %w", err)
	}
	return &Process{cfg: cfg, children: map[string]int{}, reaped: map[string]int{}}, nil
}

// processState is a replica's state file.
type processState struct {
	Replica
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"` // /proc/PID/stat starttime, guards against PID reuse
	Port       int    `json:"port"`
}

func (p *Process) statePath(id string) string { return filepath.Join(p.cfg.Dir, id+".json") }

// LogPath is where the output of replica id goes.
func (p *Process) LogPath(id string) string { return filepath.Join(p.cfg.Dir, id+".log") }

// Start implements Backend.
func (p *Process) Start(ctx context.Context, s Spec) (Replica, error) {
	if err := s.Validate(); err != nil {
		return Replica{}, err
	}
	if len(s.Command) == 0 {
		return Replica{}, fmt.Errorf("%w: replica %s: the process backend needs a command", ErrInvalidSpec, s.ReplicaID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := os.Stat(p.statePath(s.ReplicaID)); err == nil {
		return Replica{}, fmt.Errorf("%w: %s", ErrExists, s.ReplicaID)
	}
	path, err := exec.LookPath(s.Command[0])
	if err != nil {
		return Replica{}, fmt.Errorf("%w: %s: %w", ErrStart, s.ReplicaID, err)
	}
	port, err := loopbackPort(s.HostPort)
	if err != nil {
		return Replica{}, fmt.Errorf("replica %s: %w", s.ReplicaID, err)
	}
	vals := s.values("127.0.0.1", port, s.ModelDir)
	env, args, err := s.environment(vals)
	if err != nil {
		return Replica{}, fmt.Errorf("%w: replica %s: %w", ErrInvalidSpec, s.ReplicaID, err)
	}
	logf, err := os.OpenFile(p.LogPath(s.ReplicaID), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return Replica{}, fmt.Errorf("runtime: log of %s: %w", s.ReplicaID, err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(path, append(s.Command[1:], args...)...)
	cmd.Env = append(withoutKeys(p.cfg.Env, env), envList(env)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = p.cfg.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(p.LogPath(s.ReplicaID))
		return Replica{}, fmt.Errorf("%w: %s: %w", ErrStart, s.ReplicaID, err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release() // reaped with wait4 by Inspect, Wait and Stop
	ticks, _ := startTicks(pid)
	st := processState{
		Replica: Replica{
			ID:         s.ReplicaID,
			Deployment: s.Deployment,
			Backend:    "process",
			Ref:        strconv.Itoa(pid),
			State:      StateRunning,
			Endpoint:   "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			HealthPath: s.HealthPath,
			GPUUUIDs:   s.GPUUUIDs,
			StartedAt:  time.Now().UTC(),
			Labels:     s.labels(p.cfg.Owner),
		},
		PID:        pid,
		StartTicks: ticks,
		Port:       port,
	}
	st.Labels[LabelPort] = strconv.Itoa(port)
	p.children[s.ReplicaID] = pid
	if err := p.writeState(st); err != nil {
		syscall.Kill(-pid, syscall.SIGKILL)
		p.reapLocked(s.ReplicaID, true)
		os.Remove(p.LogPath(s.ReplicaID))
		return Replica{}, err
	}
	return st.Replica, nil
}

// loopbackPort returns want when 127.0.0.1:want is free (ErrPortInUse when
// not), or a free port when want is 0.
func loopbackPort(want int) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(want)))
	if err != nil {
		if want != 0 {
			return 0, fmt.Errorf("%w: 127.0.0.1:%d: %w", ErrPortInUse, want, err)
		}
		return 0, fmt.Errorf("runtime: no free loopback port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port, nil
}

func withoutKeys(base []string, drop map[string]string) []string {
	out := make([]string, 0, len(base))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := drop[k]; !ok {
			out = append(out, kv)
		}
	}
	return out
}

func (p *Process) writeState(st processState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := p.statePath(st.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("runtime: state of %s: %w", st.ID, err)
	}
	if err := os.Rename(tmp, p.statePath(st.ID)); err != nil {
		return fmt.Errorf("runtime: state of %s: %w", st.ID, err)
	}
	return nil
}

func (p *Process) readState(id string) (processState, error) {
	var st processState
	b, err := os.ReadFile(p.statePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return st, fmt.Errorf("runtime: state of %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("runtime: state of %s: %w", id, err)
	}
	return st, nil
}

// reapLocked collects the exit of child id if it has exited (or, with
// block, once it does). It reports whether the child is gone.
func (p *Process) reapLocked(id string, block bool) bool {
	pid, ok := p.children[id]
	if !ok {
		return true
	}
	opts := syscall.WNOHANG
	if block {
		opts = 0
	}
	var ws syscall.WaitStatus
	got, err := syscall.Wait4(pid, &ws, opts, nil)
	if err == syscall.EINTR || (err == nil && got == 0) {
		return false
	}
	code := -1
	switch {
	case err != nil: // ECHILD: someone else reaped it
	case ws.Exited():
		code = ws.ExitStatus()
	case ws.Signaled():
		code = 128 + int(ws.Signal())
	}
	delete(p.children, id)
	p.reaped[id] = code
	return true
}

// Inspect implements Backend.
func (p *Process) Inspect(ctx context.Context, id string) (Replica, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inspectLocked(id)
}

func (p *Process) inspectLocked(id string) (Replica, error) {
	st, err := p.readState(id)
	if err != nil {
		return Replica{}, err
	}
	r := st.Replica
	if st.State != StateRunning {
		return r, nil
	}
	if _, child := p.children[id]; child {
		if !p.reapLocked(id, false) {
			return r, nil
		}
	} else if _, ok := p.reaped[id]; !ok && alive(st.PID, st.StartTicks) {
		return r, nil // adopted from an earlier daemon, still running
	}
	code, ok := p.reaped[id]
	if !ok {
		code = -1 // not our child: its status went to whoever reaped it
	}
	r.State, r.ExitCode = StateExited, code
	st.Replica = r
	if err := p.writeState(st); err != nil {
		return r, err
	}
	delete(p.reaped, id)
	return r, nil
}

// alive reports whether pid runs and is the process that was started (same
// start time), not a later one that reused the number.
func alive(pid int, ticks uint64) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	now, zombie, err := procStat(pid)
	if err != nil {
		return true // no /proc: trust the signal check
	}
	return !zombie && (ticks == 0 || now == ticks)
}

func startTicks(pid int) (uint64, error) {
	t, _, err := procStat(pid)
	return t, err
}

// procStat reads the state (field 3) and starttime (field 22) of
// /proc/PID/stat.
func procStat(pid int) (ticks uint64, zombie bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false, errors.New("runtime: malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false, errors.New("runtime: malformed /proc stat")
	}
	ticks, err = strconv.ParseUint(f[19], 10, 64)
	return ticks, f[0] == "Z" || f[0] == "X", err
}

// Wait implements Backend.
func (p *Process) Wait(ctx context.Context, id string) (Replica, error) {
	t := time.NewTicker(p.cfg.PollInterval)
	defer t.Stop()
	for {
		r, err := p.Inspect(ctx, id)
		if err != nil || r.State != StateRunning {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-t.C:
		}
	}
}

// Logs implements Backend.
func (p *Process) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	f, err := os.Open(p.LogPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return f, err
}

// Stop implements Backend: SIGTERM to the process group, SIGKILL after
// grace (default 10 s), then wait for the leader to go.
func (p *Process) Stop(ctx context.Context, id string, grace time.Duration) error {
	if grace <= 0 {
		grace = defaultStopGrace
	}
	r, err := p.Inspect(ctx, id)
	if err != nil || r.State != StateRunning {
		return err
	}
	pid, _ := strconv.Atoi(r.Ref)
	syscall.Kill(-pid, syscall.SIGTERM)
	killAt := time.Now().Add(grace)
	killed := false
	t := time.NewTicker(p.cfg.PollInterval)
	defer t.Stop()
	for {
		r, err = p.Inspect(ctx, id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		// Exited, exited and removed meanwhile, or exited and started
		// again under the same ID (a new process: not the one signalled).
		if err != nil || r.State != StateRunning || r.Ref != strconv.Itoa(pid) {
			// Members of the group the leader left behind go too.
			syscall.Kill(-pid, syscall.SIGKILL)
			return nil
		}
		if !killed && time.Now().After(killAt) {
			syscall.Kill(-pid, syscall.SIGKILL)
			killed = true
		}
		select {
		case <-ctx.Done():
			syscall.Kill(-pid, syscall.SIGKILL)
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Remove implements Backend.
func (p *Process) Remove(ctx context.Context, id string) error {
	if err := p.Stop(ctx, id, 0); err != nil {
		if errors.Is(err, ErrNotFound) {
			os.Remove(p.LogPath(id))
			return nil
		}
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.children, id)
	delete(p.reaped, id)
	for _, f := range []string{p.statePath(id), p.LogPath(id)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("runtime: remove %s: %w", id, err)
		}
	}
	return nil
}

// List implements Backend.
func (p *Process) List(ctx context.Context) ([]Replica, error) {
	names, err := filepath.Glob(filepath.Join(p.cfg.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Replica
	for _, n := range names {
		id := strings.TrimSuffix(filepath.Base(n), ".json")
		r, err := p.Inspect(ctx, id)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		if r.Labels[LabelOwner] == p.cfg.Owner {
			out = append(out, r)
		}
	}
	return out, nil
}
