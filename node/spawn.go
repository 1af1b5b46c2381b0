package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Defaults of SpawnConfig.
const (
	DefaultSpawnTimeout = 30 * time.Second
	DefaultLogTailLines = 20
)

// SpawnConfig says how to start a daemon in the background.
type SpawnConfig struct {
	// Home is the daemon's home; the child's stdout and stderr are appended
	// to HOME/daemon.log. Required.
	Home string
	// Path is the executable to run. Empty: os.Executable().
	Path string
	// Args are its arguments, without argv[0]; they must make it run a
	// daemon in the foreground on Home.
	Args []string
	// Env is its whole environment. Nil: os.Environ().
	Env []string
	// Timeout bounds the wait for the daemon to be ready. Zero: 30s.
	Timeout time.Duration
	// LogTailLines is how many lines of daemon.log a StartError carries.
	// Zero: 20.
	LogTailLines int
}

// StartError says why a spawned daemon did not become ready. It matches
// ErrDaemonExited or ErrStartTimeout with errors.Is.
type StartError struct {
	Err      error    // ErrDaemonExited or ErrStartTimeout
	ExitCode int      // the child's exit status; -1 when it did not exit by itself
	Log      string   // path of daemon.log
	LogTail  []string // its last lines, oldest first
	Timeout  time.Duration
}

func (e *StartError) Error() string {
	if errors.Is(e.Err, ErrStartTimeout) {
		return fmt.Sprintf("%v: not ready after %v, so it was stopped; its last log lines are above, the full log is %s",
			e.Err, e.Timeout, e.Log)
	}
	return fmt.Sprintf("%v (exit status %d); its last log lines are above, the full log is %s", e.Err, e.ExitCode, e.Log)
}

// Unwrap returns ErrDaemonExited or ErrStartTimeout.
func (e *StartError) Unwrap() error { return e.Err }

// Spawn starts a daemon as a child in a new session (so it outlives the
// terminal), its output appended to HOME/daemon.log, and waits until its
// control API says it is ready. It returns that status. If the child exits
// first or is not ready within the timeout (then Spawn stops it), the error
// is a *StartError carrying the end of daemon.log. A daemon already running
// on the home is reported (ErrHomeLocked) without starting anything.
//
// Spawn does not wait for the child after it is ready; it is a daemon.
func Spawn(ctx context.Context, sc SpawnConfig) (Status, error) {
	if sc.Home == "" {
		return Status{}, fmt.Errorf("%w: spawn needs a home", ErrInvalidConfig)
	}
	if sc.Timeout == 0 {
		sc.Timeout = DefaultSpawnTimeout
	}
	if sc.LogTailLines == 0 {
		sc.LogTailLines = DefaultLogTailLines
	}
	if sc.Path == "" {
		exe, err := os.Executable()
		if err != nil {
			return Status{}, fmt.Errorf("node: find own executable: %w", err)
		}
		sc.Path = exe
	}
	if sc.Env == nil {
		sc.Env = os.Environ()
	}
	if err := ensureHome(sc.Home); err != nil {
		return Status{}, err
	}
	if err := CheckHomeFree(sc.Home); err != nil {
		return Status{}, err
	}

	logPath := filepath.Join(sc.Home, LogFile)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return Status{}, fmt.Errorf("node: open daemon log: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "--- %s starting %s %s\n", time.Now().Format(time.RFC3339), sc.Path, strings.Join(sc.Args, " "))
	logOffset, _ := logf.Seek(0, io.SeekEnd)

	cmd := exec.Command(sc.Path, sc.Args...)
	cmd.Env = sc.Env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Status{}, fmt.Errorf("node: start daemon: %w", err)
	}
	pid := cmd.Process.Pid

	startErr := func(base error, code int) error {
		return &StartError{Err: base, ExitCode: code, Log: logPath,
			LogTail: tailLines(logPath, logOffset, sc.LogTailLines), Timeout: sc.Timeout}
	}
	ctx, cancel := context.WithTimeout(ctx, sc.Timeout)
	defer cancel()
	client := NewClient(sc.Home)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		// Reap the child if it exited; it is ours until it is ready.
		var ws syscall.WaitStatus
		if wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && wpid == pid {
			cmd.Process.Release()
			return Status{}, startErr(ErrDaemonExited, ws.ExitStatus())
		}
		st, err := client.Status(ctx)
		if err == nil && st.Ready && st.PID == pid {
			cmd.Process.Release()
			return st, nil
		}
		select {
		case <-ctx.Done():
			stopChild(cmd.Process, pid)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return Status{}, startErr(ErrStartTimeout, -1)
			}
			return Status{}, fmt.Errorf("node: waiting for the daemon: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// stopChild asks the child to stop (SIGTERM leaves the pool gracefully),
// then kills it if it has not exited within a few seconds, and reaps it.
func stopChild(p *os.Process, pid int) {
	p.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var ws syscall.WaitStatus
		if wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err != nil || wpid == pid {
			p.Release()
			return
		}
		time.Sleep(pollInterval)
	}
	p.Kill()
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	p.Release()
}

// tailLines returns the last n lines of the file at path, reading from
// offset on (what this start wrote).
func tailLines(path string, offset int64, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const maxTail = 256 << 10
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > maxTail {
		offset = fi.Size() - maxTail
	}
	b, err := io.ReadAll(io.NewSectionReader(f, offset, maxTail))
	if err != nil {
		return nil
	}
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
