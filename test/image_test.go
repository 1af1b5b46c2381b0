package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dockerEngine returns the docker CLI, or skips the test when there is no
// CLI or no engine answering it.
func dockerEngine(tb testing.TB) string {
	tb.Helper()
	docker, err := exec.LookPath("docker")
	if err != nil {
		tb.Skip("no docker CLI in PATH: the node image is not built or run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		tb.Skipf("no Docker engine answers (%v: %s): the node image is not built or run", err, bytes.TrimSpace(out))
	}
	return docker
}

// containerLog is what a container wrote to stdout and stderr.
func containerLog(bin, name string) string {
	out, err := exec.Command(bin, "logs", name).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker logs: %v) %s", err, out)
	}
	return string(out)
}

// BuildLocalImage builds the node image of Dockerfile.local with `make
// image` (static binaries FROM scratch, nothing pulled) as tag, stamped
// with version, and removes it when the test ends.
func BuildLocalImage(tb testing.TB, bin, tag, version string) {
	tb.Helper()
	buildLocalImageIn(tb, bin, tag, version, tb.TempDir())
}

// buildLocalImageIn is BuildLocalImage staging the image's root file
// system in dir (dir/rootfs/usr/local/bin holds the static shoal and
// shoal-reference afterwards).
func buildLocalImageIn(tb testing.TB, bin, tag, version, dir string) {
	tb.Helper()
	mk, err := exec.LookPath("make")
	if err != nil {
		tb.Skip("no make in PATH: the node image is built by `make image`")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	tb.Cleanup(func() {
		if out, err := exec.Command(bin, "rmi", "-f", tag).CombinedOutput(); err != nil {
			tb.Logf("docker rmi %s: %v: %s", tag, err, out)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, mk, "-C", root, "image", "IMAGE="+tag, "IMAGEDIR="+dir, "VERSION="+version)
	cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("make image: %v\n%s", err, out)
	}
}

// The image `make image` builds runs shoal: `version` reports the stamped
// version and a static build (no cgo, so declared GPUs only); the daemon
// the image starts by default becomes ready on the home volume with the
// gateway on every interface, and `docker stop` (SIGTERM) makes it leave
// the pool and exit 0.
func TestLocalImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds static binaries and a Docker image")
	}
	bin := dockerEngine(t)
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	tag := "shoal-imagetest:" + suffix
	const version = "v0.0.0-imagetest"
	t0 := time.Now()
	BuildLocalImage(t, bin, tag, version)
	t.Logf("make image: %v", time.Since(t0).Round(time.Millisecond))

	out, err := docker(t, bin, "run", "--rm", "--network", "none", tag, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Version string `json:"version"`
		OS      string `json:"os"`
		Arch    string `json:"arch"`
		CGO     bool   `json:"cgo"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("shoal version -o json in the image printed %q: %v", out, err)
	}
	if v.Version != version || v.OS != "linux" || v.Arch != runtime.GOARCH || v.CGO {
		t.Errorf("version in the image = %+v; want %s, linux/%s, cgo false", v, version, runtime.GOARCH)
	}
	out, err = docker(t, bin, "run", "--rm", "--network", "none", tag, "version")
	if err != nil || !strings.HasPrefix(out, "shoal "+version+"\n") || !strings.Contains(out, "declared only") {
		t.Errorf("shoal version in the image = %q (%v); want it to start with shoal %s and say GPUs are declared only", out, err, version)
	}
	size, err := docker(t, bin, "image", "inspect", "--format", "{{.Size}}", tag)
	if n, perr := strconv.ParseInt(size, 10, 64); err != nil || perr != nil || n > 100<<20 {
		t.Errorf("image size = %q (%v, %v); want under 100 MiB (static binaries FROM scratch)", size, err, perr)
	} else {
		t.Logf("image size %.1f MiB", float64(n)/(1<<20))
	}

	// A daemon in the image as the image starts it (its CMD), with no
	// network but its own loopback: nothing it sends leaves the container.
	name := "shoal-imagetest-" + suffix
	t.Cleanup(func() { exec.Command(bin, "rm", "-f", name).Run() })
	if _, err := docker(t, bin, "run", "-d", "--name", name, "--hostname", "boxed", "--network", "none", tag); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Ready         bool   `json:"ready"`
		Name          string `json:"name"`
		Home          string `json:"home"`
		InventoryMode string `json:"inventory_mode"`
		Gateway       string `json:"gateway"`
	}
	ready := Eventually(60*time.Second, func() bool {
		out, err := docker(t, bin, "exec", name, "shoal", "status", "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Ready
	})
	if !ready {
		logs := containerLog(bin, name)
		t.Fatalf("daemon in the image never ready; last status %+v; log:\n%s", st, logs)
	}
	host, port, _ := net.SplitHostPort(st.Gateway)
	if ip := net.ParseIP(host); st.Name != "boxed" || st.Home != "/var/lib/shoal" || st.InventoryMode != "none" || ip == nil || !ip.IsUnspecified() || port != "8080" {
		t.Errorf("status in the image = %+v; want name boxed (the hostname), home /var/lib/shoal (the volume), no GPUs (none declared, no NVML), gateway on every interface, port 8080", st)
	}
	t1 := time.Now()
	if _, err := docker(t, bin, "stop", "--time", "30", name); err != nil {
		t.Fatal(err)
	}
	t.Logf("docker stop: %v", time.Since(t1).Round(time.Millisecond))
	code, err := docker(t, bin, "inspect", "--format", "{{.State.ExitCode}}", name)
	logs := containerLog(bin, name)
	if err != nil || code != "0" || !strings.Contains(logs, "msg=stopped") {
		t.Errorf("after docker stop: exit code %q (%v); want 0 and the daemon's last line msg=stopped; log:\n%s", code, err, logs)
	}
}
