package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
)

// BedLabel marks every container and network a Bed creates; its value is
// the bed's ID, so `docker ps -a --filter label=io.shoal.bed` finds what a
// crashed test left.
const BedLabel = "io.shoal.bed"

// Bed is a pool of shoal nodes, each in its own container of the locally
// built node image, on private Docker networks the bed creates (internal:
// nothing leaves the machine; mDNS and port mapping off). Each node's home
// is a host directory mounted at /var/lib/shoal, so a restarted container
// keeps it and the test reaches the control socket directly; the CLI runs
// in the container with `docker exec`. Containers run as the test's own
// user, so the test can read and remove what they write. Everything is
// removed when the test ends, failed or not; on failure the nodes' logs
// are logged first.
type Bed struct {
	tb     testing.TB
	docker string
	image  string
	id     string
	nets   []bedNet
	mu     sync.Mutex
	nodes  []*BedNode
	token  string
}

type bedNet struct {
	name   string
	subnet netip.Prefix
}

// BedNode is one node of a Bed: a container named Name (also its hostname
// and node name) with its home in Home on the host.
type BedNode struct {
	bed  *Bed
	Name string
	Home string
	// IPs are the node's fixed addresses, one per bed network ("" on a
	// network it is not on).
	IPs []string
	// nets are the indexes of the bed networks the node belongs to (those
	// HealAll connects it to again).
	nets []int
	// PeerID is the node's peer ID once it has started.
	PeerID string
}

// NewBed creates networks private Docker networks for a bed running
// image (at least one; a partition between k groups needs k).
func NewBed(tb testing.TB, docker, image string, networks int) *Bed {
	tb.Helper()
	b := &Bed{tb: tb, docker: docker, image: image, id: fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)}
	tb.Cleanup(b.teardown)
	for i := range max(1, networks) {
		name := fmt.Sprintf("shoal-bed-%s-%d", b.id, i)
		if _, err := b.cli("network", "create", "--internal", "--label", BedLabel+"="+b.id, name); err != nil {
			tb.Fatalf("bed: %v", err)
		}
		out, err := b.cli("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", name)
		if err != nil {
			tb.Fatalf("bed: %v", err)
		}
		var subnet netip.Prefix
		for _, f := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() {
				subnet = p
			}
		}
		if !subnet.IsValid() {
			tb.Fatalf("bed: network %s has no IPv4 subnet (%q)", name, out)
		}
		// Fixed addresses (--ip) need a subnet the user named: create the
		// network again with the one the engine picked.
		if _, err := b.cli("network", "rm", name); err != nil {
			tb.Fatalf("bed: %v", err)
		}
		if _, err := b.cli("network", "create", "--internal", "--subnet", subnet.String(), "--label", BedLabel+"="+b.id, name); err != nil {
			tb.Fatalf("bed: %v", err)
		}
		b.nets = append(b.nets, bedNet{name: name, subnet: subnet})
	}
	return b
}

// cli runs the bed's docker CLI (see docker).
func (b *Bed) cli(args ...string) (string, error) { return docker(b.tb, b.docker, args...) }

// docker runs the docker CLI with a 2 minute limit and returns its trimmed
// stdout.
func docker(tb testing.TB, bin string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return strings.TrimSpace(out.String()), nil
}

// teardown logs the nodes' output when the test failed, then removes every
// container and network carrying the bed's label.
func (b *Bed) teardown() {
	if b.tb.Failed() {
		for _, n := range b.Nodes() {
			b.tb.Logf("log of %s (last 80 lines):\n%s", n.Name, n.Logs(80))
		}
	}
	filter := "label=" + BedLabel + "=" + b.id
	if ids, err := b.cli("ps", "-aq", "--filter", filter); err == nil && ids != "" {
		if _, err := b.cli(append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...); err != nil {
			b.tb.Logf("bed teardown: %v", err)
		}
	}
	if ids, err := b.cli("network", "ls", "-q", "--filter", filter); err == nil && ids != "" {
		if _, err := b.cli(append([]string{"network", "rm"}, strings.Fields(ids)...)...); err != nil {
			b.tb.Logf("bed teardown: %v", err)
		}
	}
}

// Nodes are the bed's nodes in the order they were added.
func (b *Bed) Nodes() []*BedNode {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*BedNode(nil), b.nodes...)
}

// Up starts the first node, on every bed network: a new pool. flags are
// extra daemon flags (--gpu, --runtime, ...).
func (b *Bed) Up(name string, flags ...string) *BedNode {
	b.tb.Helper()
	return b.UpOn(name, b.indexes(nil), flags...)
}

// UpOn is Up on the bed networks with the given indexes (the first one
// included: the gateway is reached there).
func (b *Bed) UpOn(name string, networks []int, flags ...string) *BedNode {
	b.tb.Helper()
	n := b.start(name, networks, append([]string{"up"}, flags...))
	tok, _, err := n.Exec("token")
	if err != nil {
		b.tb.Fatalf("bed: shoal token on %s: %v", name, err)
	}
	b.token = strings.TrimSpace(tok)
	return n
}

// Join starts a node, on every bed network, that joins the pool of the
// first node.
func (b *Bed) Join(name string, flags ...string) *BedNode {
	b.tb.Helper()
	return b.JoinOn(name, b.indexes(nil), flags...)
}

// JoinOn is Join on the bed networks with the given indexes (the first
// one included).
func (b *Bed) JoinOn(name string, networks []int, flags ...string) *BedNode {
	b.tb.Helper()
	if b.token == "" {
		b.tb.Fatal("bed: Join before Up")
	}
	return b.start(name, networks, append([]string{"join", b.token}, flags...))
}

func (b *Bed) start(name string, networks []int, args []string) *BedNode {
	b.tb.Helper()
	b.mu.Lock()
	index := len(b.nodes)
	b.mu.Unlock()
	if !slices.Contains(networks, 0) {
		b.tb.Fatalf("bed: node %s must be on network 0", name)
	}
	n := &BedNode{bed: b, Name: fmt.Sprintf("shoal-bed-%s-%s", b.id, name), Home: filepath.Join(b.tb.TempDir(), "home"), nets: networks}
	if err := os.MkdirAll(n.Home, 0o700); err != nil {
		b.tb.Fatal(err)
	}
	for i, nw := range b.nets {
		if !slices.Contains(networks, i) {
			n.IPs = append(n.IPs, "")
			continue
		}
		// Fixed addresses from .10 up: a restarted or reconnected node
		// keeps the addresses its peers remember.
		a := nw.subnet.Masked().Addr().As4()
		a[3] += byte(10 + index)
		n.IPs = append(n.IPs, netip.AddrFrom4(a).String())
	}
	run := []string{"create", "--name", n.Name, "--hostname", name, "--label", BedLabel + "=" + b.id,
		"--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		"--network", b.nets[0].name, "--ip", n.IPs[0],
		"-v", n.Home + ":/var/lib/shoal", b.image}
	run = append(run, args...)
	run = append(run, "--gateway", "0.0.0.0:8080", "--mdns=false", "--nat=false")
	if _, err := b.cli(run...); err != nil {
		b.tb.Fatalf("bed: %v", err)
	}
	b.mu.Lock()
	b.nodes = append(b.nodes, n)
	b.mu.Unlock()
	for _, i := range networks {
		if i == 0 {
			continue
		}
		if _, err := b.cli("network", "connect", "--ip", n.IPs[i], b.nets[i].name, n.Name); err != nil {
			b.tb.Fatalf("bed: %v", err)
		}
	}
	if _, err := b.cli("start", n.Name); err != nil {
		b.tb.Fatalf("bed: %v", err)
	}
	st := n.WaitReady(60 * time.Second)
	n.PeerID = st.PeerID
	return n
}

// BedStatus is the part of `shoal status -o json` the bed reads.
type BedStatus struct {
	PeerID string `json:"peer_id"`
	Ready  bool   `json:"ready"`
}

// WaitReady polls `shoal status` in the container until the daemon says
// it is ready, failing the test after d.
func (n *BedNode) WaitReady(d time.Duration) BedStatus {
	n.bed.tb.Helper()
	var st BedStatus
	if !Eventually(d, func() bool {
		st = BedStatus{}
		return n.TryJSON(&st, "status") == nil && st.Ready
	}) {
		n.bed.tb.Fatalf("bed: %s never ready (last status %+v)", n.Name, st)
	}
	return st
}

// Exec runs `shoal ARGS` in the node's container and returns stdout,
// stderr and the error.
func (n *BedNode) Exec(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return n.ExecCtx(ctx, args...)
}

// ExecCtx is Exec under ctx.
func (n *BedNode) ExecCtx(ctx context.Context, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, n.bed.docker, append([]string{"exec", n.Name, "shoal"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("bed: shoal %s on %s: %w: %s", strings.Join(args, " "), n.Name, err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.String(), errb.String(), err
}

// TryJSON runs `shoal ARGS -o json` in the container and decodes stdout
// into v.
func (n *BedNode) TryJSON(v any, args ...string) error {
	out, _, err := n.Exec(append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("bed: shoal %s -o json on %s: %w: %q", args[0], n.Name, err, out)
	}
	return nil
}

// JSON is TryJSON failing the test on error.
func (n *BedNode) JSON(v any, args ...string) {
	n.bed.tb.Helper()
	if err := n.TryJSON(v, args...); err != nil {
		n.bed.tb.Fatal(err)
	}
}

// Gateway is the base URL of the node's gateway, reached from the host on
// the node's address in the first bed network.
func (n *BedNode) Gateway() string { return "http://" + n.IPs[0] + ":8080" }

// Ledger reads the node's allocation ledger over its control socket (in
// its home, mounted from the host).
func (n *BedNode) Ledger(ctx context.Context) (node.LedgerView, error) {
	return node.NewClient(n.Home).Ledger(ctx)
}

// Members is `shoal nodes -o json` as the node sees the pool; nil when the
// daemon does not answer.
func (n *BedNode) Members() []Member {
	var ms []Member
	if n.TryJSON(&ms, "nodes") != nil {
		return nil
	}
	return ms
}

// Sees reports whether the node lists peer in state.
func (n *BedNode) Sees(peer, state string) bool { return StateOf(n.Members(), peer) == state }

// Logs is the last lines of what the container wrote.
func (n *BedNode) Logs(lines int) string {
	out, err := exec.Command(n.bed.docker, "logs", "--tail", fmt.Sprint(lines), n.Name).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker logs: %v) %s", err, out)
	}
	return string(out)
}

func (n *BedNode) do(args ...string) {
	n.bed.tb.Helper()
	if _, err := n.bed.cli(args...); err != nil {
		n.bed.tb.Fatalf("bed: %v", err)
	}
}

// Kill stops the container with SIGKILL: the daemon and every replica it
// runs die at once, without a goodbye.
func (n *BedNode) Kill() { n.bed.tb.Helper(); n.do("kill", n.Name) }

// Start starts a stopped container again (same home, same addresses) and
// waits until its daemon is ready.
func (n *BedNode) Start() {
	n.bed.tb.Helper()
	n.do("start", n.Name)
	n.WaitReady(60 * time.Second)
}

// Leave runs `shoal leave` in the container. The daemon is the
// container's first process, so the container stops with it and the CLI
// may be killed before it prints the answer: the leave counts as done when
// the container exited with status 0.
func (n *BedNode) Leave() error {
	_, _, err := n.Exec("leave")
	if err == nil {
		return nil
	}
	var state string
	if !Eventually(30*time.Second, func() bool {
		state, _ = n.bed.cli("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", n.Name)
		return strings.HasPrefix(state, "false ")
	}) || state != "false 0" {
		return fmt.Errorf("%w (container state %q)", err, state)
	}
	return nil
}

// Cut disconnects the node from the bed networks with the given indexes
// (every network it is on when none is given).
func (n *BedNode) Cut(networks ...int) {
	n.bed.tb.Helper()
	for _, i := range n.indexes(networks) {
		n.do("network", "disconnect", "--force", n.bed.nets[i].name, n.Name)
	}
}

// Heal connects the node again to the bed networks with the given
// indexes (every network it was on when none is given), at its own
// addresses.
func (n *BedNode) Heal(networks ...int) {
	n.bed.tb.Helper()
	for _, i := range n.indexes(networks) {
		n.do("network", "connect", "--ip", n.IPs[i], n.bed.nets[i].name, n.Name)
	}
}

func (n *BedNode) indexes(networks []int) []int {
	if len(networks) > 0 {
		return networks
	}
	return n.nets
}

func (b *Bed) indexes(networks []int) []int {
	if len(networks) > 0 {
		return networks
	}
	all := make([]int, len(b.nets))
	for i := range all {
		all[i] = i
	}
	return all
}

// Partition splits the pool: the nodes of groups[i] keep bed network i
// alone, so each group reaches its own members and no other. The bed needs
// a network per group, and the nodes of group i must be on network i
// (UpOn, JoinOn); HealAll merges them again. A connection between two
// members of one group that ran over a network they lose dies silently;
// the mesh's connection check replaces it once the member turns suspect
// (about 5 s), which a scenario would count as part of the partition, so
// put a group's members on its network and the first one only.
func (b *Bed) Partition(groups ...[]*BedNode) {
	b.tb.Helper()
	if len(groups) > len(b.nets) {
		b.tb.Fatalf("bed: %d groups need %d networks; the bed has %d", len(groups), len(groups), len(b.nets))
	}
	for g, members := range groups {
		for _, n := range members {
			if !slices.Contains(n.nets, g) {
				b.tb.Fatalf("bed: %s is not on network %d, so it cannot keep it alone", n.Name, g)
			}
			for _, i := range n.nets {
				if i != g {
					n.Cut(i)
				}
			}
		}
	}
}

// HealAll reconnects every node to every network it was cut from.
func (b *Bed) HealAll() {
	b.tb.Helper()
	for _, n := range b.Nodes() {
		out, err := b.cli("inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", n.Name)
		if err != nil {
			b.tb.Fatalf("bed: %v", err)
		}
		on := strings.Fields(out)
		for _, i := range n.nets {
			if !slices.Contains(on, b.nets[i].name) {
				n.Heal(i)
			}
		}
	}
}

// ReapStaleBeds removes the containers, networks and bed images
// (shoal-bed:PID-…) that a bed of a test process no longer running left
// behind: one killed by a timeout gets no cleanup.
func ReapStaleBeds(tb testing.TB, docker string) {
	tb.Helper()
	b := &Bed{tb: tb, docker: docker}
	stale := func(id string) bool {
		pid, err := strconv.Atoi(strings.SplitN(id, "-", 2)[0])
		return err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) != nil
	}
	for _, kind := range [][]string{{"ps", "-a"}, {"network", "ls"}} {
		out, err := b.cli(append(kind, "--filter", "label="+BedLabel, "--format", "{{.ID}} {{.Label \""+BedLabel+"\"}}")...)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && stale(f[1]) {
				rm := []string{"rm", "-f", "-v", f[0]}
				if kind[0] == "network" {
					rm = []string{"network", "rm", f[0]}
				}
				if _, err := b.cli(rm...); err != nil {
					tb.Logf("reaping a stale bed: %v", err)
				}
			}
		}
	}
	if out, err := b.cli("images", "shoal-bed", "--format", "{{.Repository}}:{{.Tag}}"); err == nil {
		for _, ref := range strings.Fields(out) {
			if stale(strings.TrimPrefix(ref, "shoal-bed:")) {
				if _, err := b.cli("rmi", "-f", ref); err != nil {
					tb.Logf("reaping a stale bed image: %v", err)
				}
			}
		}
	}
}
