package test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/runtime/gateway"
	"github.com/shoalmesh/shoal/weightcache"
)

// openBeforeAdmission are the protocols a daemon's libp2p host answers for
// any peer past the secure handshake, and why that is acceptable: identify
// (addresses, keys, the protocol list; admission needs them), identify
// push and ping (echo), AutoNAT (dials back only the asker), hole punching
// and the relay's stop side (act only on relayed connections, which then
// need admission like any other), the relay's hop side (it answers, but
// refuses reservations and connections not between admitted members:
// mesh's TestRelayServesMembersOnly), and admission itself (it
// answers a 32-byte challenge with a nonce and a MAC, nothing else).
// TestOutsiderReachesNoDaemonProtocol fails on any protocol a daemon
// registers that is neither listed here nor refuses an outsider, so a new
// protocol cannot be forgotten.
var openBeforeAdmission = []string{
	"/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", "/ipfs/ping/1.0.0",
	"/libp2p/autonat/", "/libp2p/dcutr", "/libp2p/circuit/relay/",
	"/shoal/admit/1.0.0",
}

func isOpenBeforeAdmission(pid protocol.ID) bool {
	for _, p := range openBeforeAdmission {
		if string(pid) == p || strings.HasSuffix(p, "/") && strings.HasPrefix(string(pid), p) {
			return true
		}
	}
	return false
}

// memberOnly are the protocols every daemon must register and refuse to
// outsiders; the enumeration must find each (a renamed protocol is still
// covered, a missing one means the enumeration is wrong).
var memberOnly = []string{
	weightcache.Protocol, string(node.DeployProtocol), string(node.ReserveProtocol), string(node.ServeProtocol),
	string(node.ReceiptsProtocol), string(node.GangProtocol), string(gateway.ProtocolID),
	"/shoal/record/", "/shoal/sync/", "/shoal/leave/", "/kad/", "/meshsub/",
}

// request is a plausible first message for pid, so that a handler that
// wrongly served outsiders would have something to answer.
func request(pid protocol.ID) []byte {
	frame := func(b string) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	switch pid {
	case gateway.ProtocolID:
		return []byte("GET /v1/models HTTP/1.1\r\nHost: shoal\r\nShoal-Deployment: ref\r\n\r\n")
	case node.ReserveProtocol:
		return frame(`{"op":"list"}`)
	case node.GangProtocol:
		return []byte("ref 0\n")
	}
	junk := make([]byte, 32)
	_, _ = rand.Read(junk)
	return append(frame(`{"records":[]}`), junk...)
}

// probe opens a stream for pid from h to p, sends a request and returns
// how many bytes came back and how the stream ended.
func probe(ctx context.Context, h host.Host, p peer.ID, pid protocol.ID) (int, error) {
	s, err := h.NewStream(ctx, p, pid)
	if err != nil {
		return 0, err
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = s.Write(request(pid))
	_ = s.CloseWrite()
	b, err := io.ReadAll(s)
	return len(b), err
}

// tokenPeer is the first bootstrap peer of a join token: the daemon that
// printed it, with its addresses.
func tokenPeer(t *testing.T, token string) (mesh.Pool, peer.AddrInfo) {
	t.Helper()
	p, err := mesh.ParseToken(token)
	if err != nil || len(p.Bootstrap) == 0 {
		t.Fatalf("ParseToken = %+v, %v; want a bootstrap peer", p, err)
	}
	return p, p.Bootstrap[0]
}

// TestOutsiderReachesNoDaemonProtocol: against a real daemon in a pool of
// two, a libp2p host that knows its addresses but not the pool secret
// learns its protocol list (identify, the daemon host's Mux) and opens a
// stream for each: every one but those of openBeforeAdmission is reset
// without a byte (the DHT, gossip, records, weights, deployments,
// reservations, serving reports, receipts, gangs and HTTP). Then a node of
// another pool, told the same addresses, is refused admission and can open
// no stream at all.
func TestOutsiderReachesNoDaemonProtocol(t *testing.T) {
	nodes, _ := startPool(t, [][]string{{"--gpu", "RTX 4090:24GiB:16384", "--runtime", "process"}, nil})
	_, target := tokenPeer(t, nodes[0].Token())

	out, err := libp2p.New(libp2p.NoListenAddrs, libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := out.Connect(ctx, target); err != nil {
		t.Fatalf("outsider Connect = %v; want a connection (admission happens above it)", err)
	}
	var protos []protocol.ID
	if !Eventually(10*time.Second, func() bool {
		protos, _ = out.Peerstore().GetProtocols(target.ID)
		return len(protos) > 0
	}) {
		t.Fatal("identify told the outsider no protocols")
	}
	t.Logf("the daemon registers %d protocols: %v", len(protos), protos)
	var gated []protocol.ID
	for _, pid := range protos {
		if !isOpenBeforeAdmission(pid) {
			gated = append(gated, pid)
		}
	}
	for _, want := range memberOnly {
		found := false
		for _, pid := range gated {
			found = found || strings.HasPrefix(string(pid), want) || strings.Contains(string(pid), want)
		}
		if !found {
			t.Errorf("the daemon registers no protocol %q (of %v): the enumeration misses one", want, protos)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, pid := range gated {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := probe(ctx, out, target.ID, pid)
			switch {
			case n > 0:
				t.Errorf("outsider read %d bytes over %s (then %v); want a reset without data", n, pid, err)
			case err == nil:
				t.Errorf("outsider stream for %s ended cleanly; want it refused or reset", pid)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d member-only protocols refused an outsider within %v", len(gated), time.Since(start).Round(time.Millisecond))

	// A node of another pool, right addresses, wrong secret.
	other, err := mesh.NewPool()
	if err != nil {
		t.Fatal(err)
	}
	other.Bootstrap = []peer.AddrInfo{target}
	wrong := meshtest.Start(t, meshtest.Config(t, other, "outsider"))
	if err := wrong.Join(ctx); !errors.Is(err, mesh.ErrAdmissionRefused) {
		t.Fatalf("wrong-secret Join = %v; want ErrAdmissionRefused", err)
	}
	wrong.Host().Peerstore().AddAddrs(target.ID, target.Addrs, time.Minute)
	for _, pid := range append(gated, "/shoal/admit/1.0.0") {
		if n, err := probe(ctx, wrong.Host(), target.ID, pid); n > 0 || err == nil {
			t.Errorf("refused node probing %s: %d bytes, %v; want the connection refused", pid, n, err)
		}
	}
	for i, n := range nodes {
		if s := StateOf(n.Nodes(), wrong.ID().String()); s != "" {
			t.Errorf("node %d lists the wrong-secret node as %q", i, s)
		}
	}
}

// TestControlSocketOwnerOnly: the control socket is 0600 in a home that
// no one else may write (the daemon makes it 0700), and a process of
// another user cannot connect: neither through the home as the daemon
// left it, nor with the home opened for traversal (then the socket's own
// mode refuses). Checking another user needs root (a child process under
// setuid to nobody); elsewhere that part skips and says so.
func TestControlSocketOwnerOnly(t *testing.T) {
	n := Up(t, NewHome(t))
	sock := filepath.Join(n.Home, node.SocketFile)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v; want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(n.Home)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm()&0o022 != 0 {
		t.Errorf("home %s mode %v; want no write for group or others", n.Home, di.Mode().Perm())
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("home mode %v; want 0700", di.Mode().Perm())
	}
	if got := controlGet(t, n.Home, "/v1/status"); !strings.Contains(got, `"pid"`) {
		t.Fatalf("the owner's GET /v1/status = %q; want the status", got)
	}

	if os.Geteuid() != 0 {
		t.Skip("not root: cannot start a process under another user to try the socket")
	}
	const nobody = 65534
	// The test binary, copied where nobody may execute it.
	dir, err := os.MkdirTemp("", "shoal-dial-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "dial.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	dialAs := func() (int, string) {
		cmd := exec.Command(bin, "-test.run", "^TestControlSocketDialChild$", "-test.count=1")
		cmd.Dir = dir
		cmd.Env = []string{"SHOAL_DIAL_SOCKET=" + sock, "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("running the dialing child: %v", err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	if code, out := dialAs(); code != dialDenied {
		t.Errorf("uid %d dialing %s: exit %d; want %d (permission denied)\n%s", nobody, sock, code, dialDenied, out)
	}
	// Open the home for traversal: the socket's mode alone must refuse.
	if err := os.Chmod(n.Home, 0o711); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(n.Home, 0o700)
	if code, out := dialAs(); code != dialDenied {
		t.Errorf("uid %d dialing %s through a traversable home: exit %d; want %d (permission denied)\n%s", nobody, sock, code, dialDenied, out)
	}
}

// Exit codes of TestControlSocketDialChild.
const (
	dialConnected = 3
	dialDenied    = 4
	dialOther     = 5
)

// TestControlSocketDialChild is the process TestControlSocketOwnerOnly
// starts under another user: it dials SHOAL_DIAL_SOCKET and exits with
// what happened. Run directly, it skips.
func TestControlSocketDialChild(t *testing.T) {
	sock := os.Getenv("SHOAL_DIAL_SOCKET")
	if sock == "" {
		t.Skip("started by TestControlSocketOwnerOnly as another user only")
	}
	c, err := net.Dial("unix", sock)
	switch {
	case err == nil:
		c.Close()
		fmt.Println("connected as uid", os.Getuid())
		os.Exit(dialConnected)
	case errors.Is(err, syscall.EACCES):
		fmt.Println("denied as uid", os.Getuid(), ":", err)
		os.Exit(dialDenied)
	default:
		fmt.Println("uid", os.Getuid(), ":", err)
		os.Exit(dialOther)
	}
}

func copyFile(from, to string, perm os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestMetricsExportPlacementTransferAndLatency: a pool of two real daemons
// serves a scale-to-zero deployment whose weights one node fetches from the
// other, then refuses a second deployment for want of a card; scraping
// both daemons' /metrics finds the placement and refusal counters, the
// gateway's cold-start wait and time-to-first-byte histograms, and weight
// transfer bytes and rates, with values that match what happened.
func TestMetricsExportPlacementTransferAndLatency(t *testing.T) {
	ref := referenceBinary(t)
	_, imp := referenceModel(t, ref, "tiny")
	nodes, _ := startPool(t, [][]string{nil, {"--gpu", "RTX 4090:24GiB:16384", "--runtime", "process"}})
	m, a := nodes[0], nodes[1]
	m.Shoal("weights", "add", imp, "--name", "tiny")
	if !Eventually(20*time.Second, func() bool {
		var ms []struct {
			Name string `json:"name"`
		}
		a.JSON(&ms, "weights", "ls")
		return len(ms) == 1 && ms[0].Name == "tiny"
	}) {
		t.Fatal("the GPU node never lists model tiny")
	}
	deployTemplate(t, m, refTemplate("", 0, "5m"), "ref", "tiny")
	chat(t, m.gateway(t)) // cold: waits in M's gateway while A pulls and starts
	deployTemplate(t, m, refTemplate("", 1, "5m"), "big", "tiny")

	scrape := func() map[string]family {
		fams := map[string]family{}
		for _, n := range nodes {
			for name, f := range parseMetrics(controlGet(t, n.Home, "/metrics")) {
				g := fams[name]
				g.typ = f.typ
				g.sum += f.sum
				g.samples += f.samples
				fams[name] = g
			}
		}
		return fams
	}
	var fams map[string]family
	want := map[string]string{
		"shoal_scheduler_placements_total":            "counter",
		"shoal_scheduler_refusals_total":              "counter",
		"shoal_gateway_queue_wait_seconds":            "histogram",
		"shoal_gateway_time_to_first_byte_seconds":    "histogram",
		"shoal_gateway_cold_starts_total":             "counter",
		"shoal_weights_received_bytes_total":          "counter",
		"shoal_weights_sent_bytes_total":              "counter",
		"shoal_weights_receive_rate_bytes_per_second": "gauge",
		"shoal_weights_send_rate_bytes_per_second":    "gauge",
		"shoal_mesh_gossip_received_bytes_total":      "counter",
		"shoal_mesh_dht_received_bytes_total":         "counter",
		"shoal_mesh_dht_sent_bytes_total":             "counter",
		"shoal_mesh_dead_connections_closed_total":    "counter",
	}
	// The refusal of big is counted at its coordinator's next step.
	if !Eventually(15*time.Second, func() bool {
		fams = scrape()
		return fams["shoal_scheduler_refusals_total"].sum > 0
	}) {
		t.Errorf("no refusal counted for a deployment that fits nowhere")
	}
	for name, typ := range want {
		if f, ok := fams[name]; !ok || f.typ != typ {
			t.Errorf("/metrics family %s = %+v, found %v; want a %s", name, f, ok, typ)
		}
	}
	if got := fams["shoal_scheduler_placements_total"].sum; got != 1 {
		t.Errorf("placements = %v; want 1 (ref's replica; big fits nowhere)", got)
	}
	if got := fams["shoal_gateway_queue_wait_seconds_count"].sum; got < 1 {
		t.Errorf("queue waits observed = %v; want at least the cold request", got)
	}
	for _, name := range []string{"shoal_weights_received_bytes_total", "shoal_weights_sent_bytes_total"} {
		if got := fams[name].sum; got < 1<<20 {
			t.Errorf("%s = %v; want at least the 1 MiB model", name, got)
		}
	}
	// Heartbeats ride gossip; model announcements and lookups ride the DHT.
	for _, name := range []string{"shoal_mesh_gossip_received_bytes_total", "shoal_mesh_dht_received_bytes_total", "shoal_mesh_dht_sent_bytes_total"} {
		if got := fams[name].sum; got <= 0 {
			t.Errorf("%s = %v; want traffic", name, got)
		}
	}
}

// family is one metric family of a scrape: its type, how many samples it
// had and their sum (for a histogram, the _count and _sum series are
// families of their own here).
type family struct {
	typ     string
	samples int
	sum     float64
}

// parseMetrics reads the Prometheus text format: TYPE lines and samples.
func parseMetrics(text string) map[string]family {
	fams := map[string]family{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(f, " "); ok {
				g := fams[name]
				g.typ = typ
				fams[name] = g
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		g := fams[name]
		g.samples++
		g.sum += v
		fams[name] = g
	}
	return fams
}
