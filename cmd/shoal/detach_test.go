package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalmesh/shoal/node"
)

// envAsMain makes the test binary behave as the shoal binary, so that
// `--detach` (which re-executes os.Executable) can be tested in-process.
const envAsMain = "SHOAL_CMD_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envAsMain) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// localFlags keep a daemon on loopback: no fixed port, no LAN traffic.
var localFlags = []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--nat=false", "--gateway", "127.0.0.1:0"}

// A detached daemon on the real mesh: up returns once it is ready, the
// client commands reach it, leave stops it.
func TestDetachedDaemonLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real daemon process")
	}
	t.Setenv(envAsMain, "1")
	home := t.TempDir()
	defer node.NewClient(home).Leave(context.Background()) // in case the test fails midway

	args := append([]string{"--home", home, "up", "--detach", "--name", "detached", "--gpu", "RTX 3090:24GiB:10496"}, localFlags...)
	code, stdout, stderr := shoal(t, args...)
	if code != exitOK || !strings.HasPrefix(stdout, "shoal join shoal1.") {
		t.Fatalf("shoal up --detach: exit %d, stdout %q, stderr %q; want 0 and a join command", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "Started a new pool") {
		t.Errorf("shoal up --detach stderr = %q; want it to say a new pool started", stderr)
	}

	code, tok, _ := shoal(t, "--home", home, "token")
	if code != exitOK || "shoal join "+tok != stdout {
		t.Errorf("shoal token = %d %q; want the token up printed (%q)", code, tok, stdout)
	}

	code, out, stderr := shoal(t, "--home", home, "-o", "json", "nodes")
	var ms []node.Member
	if err := json.Unmarshal([]byte(out), &ms); code != exitOK || err != nil {
		t.Fatalf("shoal nodes -o json = %d %q (%v), stderr %q", code, out, err, stderr)
	}
	if len(ms) != 1 || !ms[0].Self || ms[0].Name != "detached" || len(ms[0].GPUs) != 1 || ms[0].GPUs[0].Source != "declared" {
		t.Errorf("nodes = %+v; want only self, named detached, with one declared GPU", ms)
	}

	// A second daemon on the same home is refused before it starts.
	code, _, stderr = shoal(t, append([]string{"--home", home, "up", "--detach"}, localFlags...)...)
	if code != exitError || !strings.Contains(stderr, "home is in use") {
		t.Errorf("second up --detach: exit %d, stderr %q; want 1 and home is in use", code, stderr)
	}

	code, out, stderr = shoal(t, "--home", home, "leave")
	if code != exitOK || !strings.HasPrefix(out, "left pool ") {
		t.Errorf("shoal leave = %d %q, stderr %q; want 0 and left pool", code, out, stderr)
	}
	if err := node.CheckHomeFree(home); err != nil {
		t.Errorf("home after leave: %v; want free", err)
	}

	// The home remembers its pool: up resumes it and says so.
	code, _, stderr = shoal(t, append([]string{"--home", home, "up", "--detach"}, localFlags...)...)
	if code != exitOK || !strings.Contains(stderr, "Resumed pool") {
		t.Errorf("second up: exit %d, stderr %q; want 0 and Resumed pool", code, stderr)
	}
	if code, _, stderr = shoal(t, "--home", home, "reset-identity"); code != exitError || !strings.Contains(stderr, "home is in use") {
		t.Errorf("reset-identity while running: exit %d, stderr %q; want 1 and home is in use", code, stderr)
	}
	shoal(t, "--home", home, "leave")
}

// A detached daemon that fails at start: up prints the end of its log and
// the reason, and exits 1.
func TestDetachedDaemonFailsToStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real daemon process")
	}
	t.Setenv(envAsMain, "1")
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)
	home := t.TempDir()
	code, stdout, stderr := shoal(t, "--home", home, "up", "--detach", "--listen", taken, "--mdns=false", "--nat=false")
	if code != exitError || stdout != "" {
		t.Errorf("up --detach on a taken port: exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	for _, want := range []string{
		"listen address " + taken + " is in use; pass --listen with another port (or port 0)", // from the log tail
		"daemon exited before it was ready",
		filepath.Join(home, node.LogFile),
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("up --detach on a taken port: stderr lacks %q:\n%s", want, stderr)
		}
	}
}
