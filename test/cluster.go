// Package test holds end-to-end tests and benchmark harnesses that drive real
// `shoal` processes through the CLI, the way a user or a script does. Unit
// tests sit beside their code; nothing here is a test double.
package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Loopback are the listen flags every test node uses: loopback only, ports
// chosen by the kernel, no mDNS or port mapping (they send beyond loopback),
// and a gateway on a free loopback port (`shoal status` tells which).
var Loopback = []string{
	"--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--listen", "/ip4/127.0.0.1/tcp/0",
	"--mdns=false", "--nat=false", "--gateway", "127.0.0.1:0",
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/shoal once per test process and returns its path.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shoal-bin-")
		if err != nil {
			buildErr = err
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		binPath = filepath.Join(dir, "shoal")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/shoal")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// Node is one shoal daemon with its own home dir.
type Node struct {
	tb   testing.TB
	Home string
	PID  int
}

// Member is the part of `shoal nodes -o json` scripts rely on.
type Member struct {
	PeerID string `json:"peer_id"`
	State  string `json:"state"`
	Self   bool   `json:"self"`
	GPUs   []struct {
		UUID           string `json:"uuid"`
		Name           string `json:"name"`
		VRAMTotalBytes uint64 `json:"vram_total_bytes"`
		VRAMFreeBytes  uint64 `json:"vram_free_bytes"`
		CUDACores      int    `json:"cuda_cores"`
		Source         string `json:"source"`
	} `json:"gpus"`
}

// Run runs the shoal CLI with args and returns stdout, stderr and the error.
func Run(tb testing.TB, args ...string) (string, string, error) {
	tb.Helper()
	bin := Binary(tb) // the first call builds; that time is not the command's
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// NewHome returns a fresh home dir removed when the test ends.
func NewHome(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "shoal-home-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Up starts a new pool in home with `up --detach`.
func Up(tb testing.TB, home string, extra ...string) *Node {
	tb.Helper()
	return start(tb, home, append([]string{"up"}, extra...))
}

// Join starts a daemon in home joining with token.
func Join(tb testing.TB, home, token string, extra ...string) *Node {
	tb.Helper()
	return start(tb, home, append([]string{"join", token}, extra...))
}

func start(tb testing.TB, home string, args []string) *Node {
	tb.Helper()
	full := append([]string{"--home", home}, args...)
	full = append(full, "--detach")
	full = append(full, Loopback...)
	if _, stderr, err := Run(tb, full...); err != nil {
		tb.Fatalf("shoal %s: %v\n%s", strings.Join(args[:1], " "), err, stderr)
	}
	n := &Node{tb: tb, Home: home}
	var st struct {
		PID int `json:"pid"`
	}
	n.JSON(&st, "status")
	n.PID = st.PID
	tb.Cleanup(n.Stop)
	return n
}

// JSON runs `shoal --home HOME ARGS -o json` and decodes stdout into v.
func (n *Node) JSON(v any, args ...string) {
	n.tb.Helper()
	out, stderr, err := Run(n.tb, append(append([]string{"--home", n.Home}, args...), "-o", "json")...)
	if err != nil {
		n.tb.Fatalf("shoal %s: %v\n%s", args[0], err, stderr)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		n.tb.Fatalf("shoal %s -o json: %v\n%s", args[0], err, out)
	}
}

// Token is `shoal token`.
func (n *Node) Token() string {
	n.tb.Helper()
	out, stderr, err := Run(n.tb, "--home", n.Home, "token")
	if err != nil {
		n.tb.Fatalf("shoal token: %v\n%s", err, stderr)
	}
	return strings.TrimSpace(out)
}

// Nodes is `shoal nodes -o json`.
func (n *Node) Nodes() []Member {
	n.tb.Helper()
	var ms []Member
	n.JSON(&ms, "nodes")
	return ms
}

// PeerID is this node's peer ID.
func (n *Node) PeerID() string {
	for _, m := range n.Nodes() {
		if m.Self {
			return m.PeerID
		}
	}
	n.tb.Fatalf("node %s does not list itself", n.Home)
	return ""
}

// Kill sends SIGKILL: no goodbye, no cleanup.
func (n *Node) Kill() {
	if n.PID > 0 {
		_ = syscall.Kill(n.PID, syscall.SIGKILL)
		waitGone(n.PID)
		n.PID = 0
	}
}

// Stop leaves gracefully, falling back to SIGKILL.
func (n *Node) Stop() {
	if n.PID <= 0 {
		return
	}
	_, _, _ = Run(n.tb, "--home", n.Home, "leave")
	if !waitGone(n.PID) {
		_ = syscall.Kill(n.PID, syscall.SIGKILL)
		waitGone(n.PID)
	}
	n.PID = 0
}

// RSS is the daemon's resident set size in bytes.
func (n *Node) RSS() uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.PID))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb uint64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

func waitGone(pid int) bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return true
		}
		// A zombie child of ours counts as gone.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && bytes.Contains(b, []byte(") Z ")) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// StateOf returns the state in which n lists peer, or "" when not listed.
func StateOf(ms []Member, peer string) string {
	for _, m := range ms {
		if m.PeerID == peer {
			return m.State
		}
	}
	return ""
}

// ListedBy reports whether every node in nodes lists peer in state.
func ListedBy(nodes []*Node, peer, state string) bool {
	for _, n := range nodes {
		if StateOf(n.Nodes(), peer) != state {
			return false
		}
	}
	return true
}

// Eventually polls cond every 50 ms until it holds or d passes.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
