package test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// lan is a private Ethernet segment made of network namespaces: one
// namespace holds a bridge, each host namespace a veth port on it. mDNS
// multicast stays inside; nothing reaches the machine's own network.
type lan struct {
	tb     testing.TB
	prefix string
	hosts  []string // namespace names, index i has address 10.231.7.(i+1)
}

// newLAN creates n hosts on one bridge and removes them when the test ends.
// It skips the test where namespaces cannot be made (not root, no iproute2).
func newLAN(tb testing.TB, n int) *lan {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs ip(8) from iproute2 to create network namespaces")
	}
	l := &lan{tb: tb, prefix: fmt.Sprintf("shoalmdns%d", os.Getpid()%100000)}
	sw := l.prefix + "sw"
	if out, err := exec.Command("ip", "netns", "add", sw).CombinedOutput(); err != nil {
		tb.Skipf("cannot create a network namespace here: %v: %s", err, out)
	}
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", sw).Run() })
	l.ip("-n", sw, "link", "add", "br0", "type", "bridge")
	l.ip("-n", sw, "link", "set", "br0", "up")
	for i := range n {
		h := fmt.Sprintf("%sh%d", l.prefix, i)
		// Interface names are at most 15 bytes.
		host, port := fmt.Sprintf("sm%05dv%d", os.Getpid()%100000, i), fmt.Sprintf("sm%05dp%d", os.Getpid()%100000, i)
		l.ip("netns", "add", h)
		tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", h).Run() })
		l.ip("link", "add", host, "type", "veth", "peer", "name", port)
		l.ip("link", "set", host, "netns", h)
		l.ip("link", "set", port, "netns", sw)
		l.ip("-n", sw, "link", "set", port, "master", "br0")
		l.ip("-n", sw, "link", "set", port, "up")
		l.ip("-n", h, "link", "set", "lo", "up")
		l.ip("-n", h, "addr", "add", fmt.Sprintf("10.231.7.%d/24", i+1), "dev", host)
		l.ip("-n", h, "link", "set", host, "up")
		// Multicast needs a route; the segment is the whole world here.
		l.ip("-n", h, "route", "add", "default", "dev", host)
		l.hosts = append(l.hosts, h)
	}
	return l
}

func (l *lan) ip(args ...string) {
	l.tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// start runs `shoal ARGS --detach` in host i's namespace, listening on its
// LAN address with mDNS on, and returns once the daemon is ready. The CLI
// reaches it afterwards from any namespace: the control socket is a file.
func (l *lan) start(i int, home string, args ...string) *Node {
	l.tb.Helper()
	addr := fmt.Sprintf("10.231.7.%d", i+1)
	full := append([]string{"netns", "exec", l.hosts[i], Binary(l.tb), "--home", home}, args...)
	full = append(full, "--detach", "--mdns=true", "--nat=false",
		"--listen", "/ip4/"+addr+"/tcp/0", "--listen", "/ip4/"+addr+"/udp/0/quic-v1")
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		l.tb.Fatalf("shoal %s in %s: %v\n%s", args[0], l.hosts[i], err, out)
	}
	n := &Node{tb: l.tb, Home: home}
	var st struct {
		PID int `json:"pid"`
	}
	n.JSON(&st, "status")
	n.PID = st.PID
	l.tb.Cleanup(n.Stop)
	return n
}

// TestMDNSFindsMembersOnTheLAN: a member whose remembered bootstrap peer is
// long gone finds the pool on its LAN by mDNS, while a daemon of another
// pool on the same LAN stays apart.
func TestMDNSFindsMembersOnTheLAN(t *testing.T) {
	l := newLAN(t, 3)
	a := l.start(0, NewHome(t), "up", "--gpu", "RTX 3060:12GiB")

	// B holds the pool's secret (as after an earlier `join`) but its only
	// bootstrap address names a member that no longer exists.
	var pf struct {
		PoolID    string   `json:"pool_id"`
		Secret    string   `json:"secret"`
		Bootstrap []string `json:"bootstrap"`
	}
	b, err := os.ReadFile(filepath.Join(a.Home, "pool.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pf); err != nil {
		t.Fatal(err)
	}
	_, pub, _ := crypto.GenerateEd25519Key(rand.Reader)
	gone, _ := peer.IDFromPublicKey(pub)
	pf.Bootstrap = []string{"/ip4/10.231.7.77/tcp/4242/p2p/" + gone.String()}
	homeB := NewHome(t)
	b, _ = json.Marshal(pf)
	if err := os.WriteFile(filepath.Join(homeB, "pool.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	bNode := l.start(1, homeB, "up", "--gpu", "RTX 4090:24GiB", "--join-timeout", "1s")
	outsider := l.start(2, NewHome(t), "up", "--gpu", "RTX 2080:8GiB")

	members := []*Node{a, bNode}
	for _, n := range members {
		for _, m := range members {
			if !Eventually(20*time.Second, func() bool { return StateOf(n.Nodes(), m.PeerID()) == "alive" }) {
				t.Fatalf("%s does not list %s alive: %+v", n.Home, m.PeerID(), n.Nodes())
			}
		}
	}
	// The service name carries the pool ID, so mDNS never introduces a
	// daemon of another pool; were it dialled, admission would refuse it
	// (see the outsider in TestFiveProcessesFormOnePool). Give mDNS a few query rounds.
	time.Sleep(3 * time.Second)
	for _, n := range members {
		if s := StateOf(n.Nodes(), outsider.PeerID()); s != "" {
			t.Errorf("%s lists the outsider as %q; want it absent", n.Home, s)
		}
	}
	if got := outsider.Nodes(); len(got) != 1 {
		t.Errorf("the outsider lists %d members; want only itself", len(got))
	}
}
