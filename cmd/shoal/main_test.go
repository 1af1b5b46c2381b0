package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/node"
)

// shoal runs the CLI in-process and returns its exit code and output.
func shoal(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func validToken(t *testing.T) (mesh.Pool, string) {
	t.Helper()
	p, err := mesh.NewPool()
	if err != nil {
		t.Fatal(err)
	}
	return p, mesh.EncodeToken(p)
}

func TestJoinRejectsBadTokenBeforeStarting(t *testing.T) {
	_, good := validToken(t)
	// Change one character in the middle: the checksum must catch it.
	mid := len(good) / 2
	swap := byte('2')
	if good[mid] == swap {
		swap = '3'
	}
	mistyped := good[:mid] + string(swap) + good[mid+1:]
	tests := []struct {
		name  string
		token string
		want  string // the mesh error the message must carry
	}{
		{"foreign", "garbage", mesh.ErrTokenPrefix.Error()},
		{"malformed", "shoal1.0OIl", mesh.ErrTokenMalformed.Error()},
		{"mistyped", mistyped, mesh.ErrTokenChecksum.Error()},
		{"truncated", good[:len(good)-5], "mesh: "}, // malformed or checksum, by length
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			code, stdout, stderr := shoal(t, "--home", home, "join", tt.token)
			if code != exitUsage {
				t.Errorf("shoal join %s: exit %d; want %d", tt.name, code, exitUsage)
			}
			if !strings.Contains(stderr, "invalid join token") || !strings.Contains(stderr, tt.want) {
				t.Errorf("shoal join %s: stderr = %q; want it to say invalid join token and %q", tt.name, stderr, tt.want)
			}
			if stdout != "" {
				t.Errorf("shoal join %s: stdout = %q; want nothing", tt.name, stdout)
			}
			if _, err := os.Stat(home); !os.IsNotExist(err) {
				t.Errorf("shoal join %s created the home (%v); want nothing started", tt.name, err)
			}
		})
	}
}

func TestJoinRefusesHomeOfAnotherPool(t *testing.T) {
	home := t.TempDir()
	var other [32]byte
	other[0] = 1
	pj := `{"secret":"` + hex.EncodeToString(other[:]) + `","bootstrap":[]}`
	if err := os.WriteFile(filepath.Join(home, node.PoolFile), []byte(pj), 0o600); err != nil {
		t.Fatal(err)
	}
	_, tok := validToken(t)
	code, _, stderr := shoal(t, "--home", home, "join", tok)
	if code != exitError || !strings.Contains(stderr, "--force") || !strings.Contains(stderr, "another pool") {
		t.Errorf("join into another pool's home: exit %d, stderr %q; want 1 and a hint at --force", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(home, node.LockFile)); !os.IsNotExist(err) {
		t.Errorf("refused join touched the lock (%v); want nothing started", err)
	}
}

func TestNoDaemon(t *testing.T) {
	home := t.TempDir()
	for _, cmd := range []string{"token", "nodes", "status", "leave"} {
		code, stdout, stderr := shoal(t, "--home", home, cmd)
		want := "no shoal daemon is running for home " + home + "; start one with `shoal up` or `shoal join TOKEN`"
		if code != exitError || !strings.Contains(stderr, want) || stdout != "" {
			t.Errorf("shoal %s without daemon: exit %d, stdout %q, stderr %q; want 1 and %q", cmd, code, stdout, stderr, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	home := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frob"}, `unknown command "frob"`},
		{"unknown flag", []string{"nodes", "--frob"}, "unknown flag: --frob"},
		{"bad output", []string{"-o", "yaml", "version"}, `--output "yaml" is not a format`},
		{"extra argument", []string{"token", "x"}, "takes no arguments"},
		{"join without token", []string{"join"}, "takes one argument, the join TOKEN"},
		{"record without peer", []string{"record"}, "takes one argument, the PEER_ID"},
		{"bad gpu", []string{"up", "--gpu", "nonsense"}, `--gpu "nonsense"`},
		{"bad listen", []string{"up", "--listen", "localhost:4242"}, `--listen "localhost:4242" is not a multiaddr`},
		{"bad bool", []string{"up", "--mdns=maybe"}, "--mdns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := shoal(t, append([]string{"--home", home}, tt.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "--help") {
				t.Errorf("shoal %v: exit %d, stderr %q; want %d, %q and a pointer to --help", tt.args, code, stderr, exitUsage, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(home, node.LockFile)); !os.IsNotExist(err) {
		t.Errorf("a usage error started a daemon (%v)", err)
	}
}

func TestVersionJSON(t *testing.T) {
	code, stdout, stderr := shoal(t, "version", "-o", "json")
	if code != exitOK {
		t.Fatalf("shoal version -o json: exit %d, stderr %q", code, stderr)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("shoal version -o json printed %q: %v", stdout, err)
	}
	if v.Version != version || v.Go != runtime.Version() || v.OS != runtime.GOOS || v.Arch != runtime.GOARCH {
		t.Errorf("version = %+v; want version %q, go %q, %s/%s", v, version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	code, stdout, _ = shoal(t, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "shoal "+version+"\n") {
		t.Errorf("shoal version = %d %q; want 0 and a first line %q", code, stdout, "shoal "+version)
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range []string{"up", "join", "token", "nodes", "status", "record", "leave", "reset-identity", "version"} {
		code, stdout, _ := shoal(t, cmd, "--help")
		if code != exitOK || !strings.Contains(stdout, "Examples:") {
			t.Errorf("shoal %s --help: exit %d, examples %v; want 0 and examples", cmd, code, strings.Contains(stdout, "Examples:"))
		}
	}
}

func TestWithoutDetach(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{[]string{"up", "--detach", "--name", "x"}, []string{"up", "--name", "x"}},
		{[]string{"--home", "/h", "join", "--detach=true", "T"}, []string{"--home", "/h", "join", "T"}},
		{[]string{"join", "--", "--detach"}, []string{"join", "--", "--detach"}},
	}
	for _, tt := range tests {
		if got := withoutDetach(tt.in); strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("withoutDetach(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestNodesTable(t *testing.T) {
	ms := []node.Member{
		{
			PeerID: "12D3KooWSelfSelfSelfSelf", Name: "lab-1", State: mesh.StateAlive, Self: true,
			GPUs: []hardware.GPU{
				{UUID: "GPU-h100", Name: "NVIDIA H100 80GB HBM3", VRAMTotalBytes: 80 << 30, VRAMFreeBytes: 79 << 30, CUDACores: 16896,
					NVLinks: make([]hardware.NVLink, 18), UtilizationPct: 42, Source: hardware.SourceNVML},
				{UUID: "GPU-4090", Name: "NVIDIA RTX 4090", VRAMTotalBytes: 24 << 30, VRAMFreeBytes: 24064 << 20, CUDACores: 16384,
					PCIeGen: 4, PCIeWidth: 16, UtilizationPct: 0, Source: hardware.SourceNVML},
			},
			// Half the H100 and 40 GiB of it promised; the 4090 untouched.
			Free: &mesh.FreeCapacity{GPUs: []mesh.FreeGPU{
				{UUID: "GPU-h100", Milli: 500, VRAMBytes: 40 << 30},
				{UUID: "GPU-4090", Milli: 1000, VRAMBytes: 24 << 30},
			}},
		},
		{
			PeerID: "12D3KooWLaptopLaptopLaptop", Name: "laptop", State: mesh.StateSuspect,
			GPUs: []hardware.GPU{{Name: "RTX 3060", VRAMTotalBytes: 12 << 30, VRAMFreeBytes: 12 << 30, Source: hardware.SourceDeclared}},
		},
		{PeerID: "12D3KooWNoGPUNoGPUNoGPU", State: mesh.StateDead},
	}
	var b bytes.Buffer
	if err := writeNodesTable(&b, ms); err != nil {
		t.Fatal(err)
	}
	want := `PEER          NAME    STATE    GPU                    VRAM           RESERVED           CUDA CORES  LINK        UTIL  SOURCE
12D3KooWSelf  lab-1   alive    NVIDIA H100 80GB HBM3  79.0/80.0 GiB  0.5 GPU, 40.0 GiB  16896       NVLink x18  42%   nvml
12D3KooWSelf  lab-1   alive    NVIDIA RTX 4090        23.5/24.0 GiB  -                  16384       PCIe4 x16   0%    nvml
12D3KooWLapt  laptop  suspect  RTX 3060               12.0/12.0 GiB  -                  -           -           -     declared
12D3KooWNoGP  -       dead     -                      -              -                  -           -           -     -
`
	if got := b.String(); got != want {
		t.Errorf("writeNodesTable =\n%s\nwant\n%s", got, want)
	}
}

func TestVRAM(t *testing.T) {
	tests := []struct {
		free, total uint64
		want        string
	}{
		{0, 0, "-"},
		{512 << 20, 1 << 30, "0.5/1.0 GiB"},
		{100 << 20, 512 << 20, "100.0/512.0 MiB"},
		{1 << 40, 2 << 40, "1.0/2.0 TiB"},
		{10, 100, "10/100 B"},
	}
	for _, tt := range tests {
		if got := vram(tt.free, tt.total); got != tt.want {
			t.Errorf("vram(%d, %d) = %q; want %q", tt.free, tt.total, got, tt.want)
		}
	}
}

func TestStatusTable(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := node.Status{
		PeerID: "12D3KooWX", PoolID: "abcd", Name: "lab-1", Version: "v1", Home: "/h",
		Addrs: []string{"/ip4/10.0.0.1/tcp/4242", "/ip4/10.0.0.1/udp/4242/quic-v1"}, StartedAt: start,
		Ready: true, Members: node.MemberCount{Alive: 2, Total: 3}, InventoryMode: "declared",
	}
	var b bytes.Buffer
	if err := writeStatus(&b, st, start.Add(90*time.Minute+5*time.Second)); err != nil {
		t.Fatal(err)
	}
	want := `PEER       12D3KooWX
POOL       abcd
NAME       lab-1
VERSION    v1
HOME       /h
ADDRS      /ip4/10.0.0.1/tcp/4242
           /ip4/10.0.0.1/udp/4242/quic-v1
MEMBERS    2/3 alive
UPTIME     1h30m5s
INVENTORY  declared
READY      yes
`
	if got := b.String(); got != want {
		t.Errorf("writeStatus =\n%s\nwant\n%s", got, want)
	}
}

func TestRecordTable(t *testing.T) {
	rec := mesh.Record{
		PeerID: "12D3KooWX", Seq: 7, Name: "lab-1", Addrs: []string{"/ip4/10.0.0.1/tcp/4242"},
		Inventory: hardware.Inventory{
			GPUs: []hardware.GPU{{Index: 0, UUID: "GPU-1", Name: "RTX 4090", VRAMTotalBytes: 24 << 30, VRAMFreeBytes: 24 << 30,
				CUDACores: 16384, Source: hardware.SourceDeclared}},
			Host: hardware.Host{OS: "linux", Arch: "amd64", CPUCores: 8},
		},
	}
	raw, _ := json.Marshal(rec)
	var b bytes.Buffer
	if err := writeRecord(&b, raw); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PEER       12D3KooWX", "SEQ        7", "linux/amd64, 8 CPU cores",
		"0      GPU-1  RTX 4090  24.0/24.0 GiB  16384       -     -     declared"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("writeRecord output lacks %q:\n%s", want, b.String())
		}
	}
}
