package mesh_test

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// blackholeProxy forwards TCP connections from its loopback listener to
// target until blackhole is called; from then on it reads and drops every
// byte in both directions and keeps every socket open, as a network that
// vanished under a connection does (no RST, no FIN). Connections accepted
// afterwards are held the same way and never forwarded.
type blackholeProxy struct {
	ln     net.Listener
	target string
	dark   atomic.Bool

	mu       sync.Mutex
	conns    []net.Conn
	upstream []string // local addresses of the proxy's connections to target
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, target string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *blackholeProxy) addr() multiaddr.Multiaddr {
	a, err := manet.FromNetAddr(p.ln.Addr())
	if err != nil {
		panic(err)
	}
	return a
}

func (p *blackholeProxy) blackhole() { p.dark.Store(true) }

func (p *blackholeProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *blackholeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		if p.dark.Load() {
			p.wg.Add(1)
			go p.pump(io.Discard, c, nil)
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.track(u)
		p.mu.Lock()
		p.upstream = append(p.upstream, u.LocalAddr().String())
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(u, c, []net.Conn{c, u})
		go p.pump(c, u, []net.Conn{c, u})
	}
}

// pump copies src to dst while the proxy forwards and drops what it reads
// once it is dark. While forwarding, the end of src closes both sockets of
// the pair; once dark, nothing is passed on, not even a close.
func (p *blackholeProxy) pump(dst io.Writer, src net.Conn, pair []net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if err != nil {
			if !p.dark.Load() {
				for _, c := range pair {
					_ = c.Close()
				}
			}
			return
		}
		if p.dark.Load() {
			continue
		}
		if _, err := dst.Write(buf[:k]); err != nil && !p.dark.Load() {
			for _, c := range pair {
				_ = c.Close()
			}
			return
		}
	}
}

// wentThrough reports whether c, seen from either end, runs via the proxy.
func (p *blackholeProxy) wentThrough(c network.Conn) bool {
	if c.RemoteMultiaddr().Equal(p.addr()) {
		return true
	}
	remote, err := manet.ToNetAddr(c.RemoteMultiaddr())
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.upstream {
		if u == remote.String() {
			return true
		}
	}
	return false
}

func (p *blackholeProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func tcpListenAddr(t *testing.T, n *mesh.Node) multiaddr.Multiaddr {
	t.Helper()
	for _, a := range n.Host().Network().ListenAddresses() {
		if _, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil {
			return a
		}
	}
	t.Fatal("node listens on no TCP address")
	return nil
}

// fastMember starts a node of pool with the Fast timings; when pool names
// a bootstrap peer, it joins through it.
func fastMember(t *testing.T, pool mesh.Pool, name string) *mesh.Node {
	t.Helper()
	c := meshtest.Config(t, pool, name)
	meshtest.Fast(&c)
	n := meshtest.Start(t, c)
	if len(pool.Bootstrap) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// behindProxy starts a blackhole proxy in front of b's TCP address and a
// member "a" of b's pool that joins through it, so its connection to b
// runs through the proxy while b's direct address (returned too) becomes
// known to a from identify and b's record.
func behindProxy(t *testing.T, pool mesh.Pool, b *mesh.Node) (*mesh.Node, *blackholeProxy, multiaddr.Multiaddr) {
	t.Helper()
	bTCP := tcpListenAddr(t, b)
	target, err := manet.ToNetAddr(bTCP)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, target.String())
	a := fastMember(t, mesh.Pool{Secret: pool.Secret, Bootstrap: []peer.AddrInfo{{ID: b.ID(), Addrs: []multiaddr.Multiaddr{proxy.addr()}}}}, "a")
	return a, proxy, bTCP
}

// allAlive fails t unless every node sees every one of nodes alive within
// 10 s.
func allAlive(t *testing.T, nodes []*mesh.Node) {
	t.Helper()
	for i, n := range nodes {
		if !meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) }) {
			t.Fatalf("node %d sees %v; want all alive", i, n.Members())
		}
	}
}

// throughProxy fails t unless a holds a connection to b and every one
// runs through proxy.
func throughProxy(t *testing.T, a, b *mesh.Node, proxy *blackholeProxy) {
	t.Helper()
	conns := a.Host().Network().ConnsToPeer(b.ID())
	for _, c := range conns {
		if !proxy.wentThrough(c) {
			t.Fatalf("a reached b at %s before the blackhole; want every connection through the proxy at %s", c.RemoteMultiaddr(), proxy.addr())
		}
	}
	if len(conns) == 0 {
		t.Fatal("a holds no connection to b")
	}
}

func stateOf(n *mesh.Node, id peer.ID) mesh.State {
	for _, m := range n.Members() {
		if m.PeerID == id {
			return m.State
		}
	}
	return ""
}

// TestSilentlyDeadConnectionIsReplaced: a joins b through a TCP proxy, so
// their one connection runs through it, while b's direct addresses are
// known to a from identify and b's record. The proxy then goes dark
// without closing a socket. Heartbeats stop, each turns the other suspect,
// the connection check finds the connection dead, closes it and dials the
// direct address: both are alive to each other again within seconds, over
// a connection that avoids the proxy. Without the check they would wait
// for yamux's keepalive (30 s plus a 10 s write timeout).
func TestSilentlyDeadConnectionIsReplaced(t *testing.T) {
	pool, err := mesh.NewPool()
	if err != nil {
		t.Fatal(err)
	}
	b := fastMember(t, pool, "b")
	a, proxy, bTCP := behindProxy(t, pool, b)
	nodes := []*mesh.Node{a, b}
	allAlive(t, nodes)
	throughProxy(t, a, b, proxy)
	if !slices.ContainsFunc(a.Host().Peerstore().Addrs(b.ID()), bTCP.Equal) {
		t.Fatalf("a's peerstore holds %v for b; want b's direct address %s too", a.Host().Peerstore().Addrs(b.ID()), bTCP)
	}

	proxy.blackhole()
	start := time.Now()
	if !meshtest.Eventually(5*time.Second, func() bool { return stateOf(a, b.ID()) != mesh.StateAlive }) {
		t.Fatalf("a still sees b alive %s after the blackhole; the proxy does not cut them", time.Since(start))
	}
	const bound = 15 * time.Second
	back := meshtest.Eventually(bound, func() bool {
		return meshtest.Sees(a, nodes, mesh.StateAlive) && meshtest.Sees(b, nodes, mesh.StateAlive)
	})
	took := time.Since(start)
	if !back {
		t.Fatalf("a and b not alive to each other %s after the blackhole (a sees b %s, b sees a %s)", took, stateOf(a, b.ID()), stateOf(b, a.ID()))
	}
	t.Logf("blackhole to both alive again: %s (dead connections closed: a %d, b %d)", took.Round(time.Millisecond), a.Stats().DeadConnsClosed, b.Stats().DeadConnsClosed)
	for _, pair := range [][2]*mesh.Node{{a, b}, {b, a}} {
		for _, c := range pair[0].Host().Network().ConnsToPeer(pair[1].ID()) {
			if proxy.wentThrough(c) {
				t.Errorf("%s still holds a connection to %s through the proxy (%s)", pair[0].ID(), pair[1].ID(), c.RemoteMultiaddr())
			}
		}
	}
	if got := a.Stats().DeadConnsClosed + b.Stats().DeadConnsClosed; got == 0 {
		t.Errorf("dead connections closed = 0; want the check to have closed the proxied one")
	}
}

// TestLiveConnectionsAreKept: members whose connections answer keep them,
// whether the check runs on demand or the pool just runs for a while.
func TestLiveConnectionsAreKept(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	for i, n := range nodes {
		if !meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) }) {
			t.Fatalf("node %d sees %v; want all alive", i, n.Members())
		}
	}
	var held []network.Conn
	for i, n := range nodes {
		for j, m := range nodes {
			if i == j {
				continue
			}
			if got := n.CheckConns(m.ID()); got != 0 {
				t.Errorf("node %d CheckConns(node %d) closed %d connections; want 0", i, j, got)
			}
			held = append(held, n.Host().Network().ConnsToPeer(m.ID())...)
		}
		if got := n.CheckConns(n.ID()); got != 0 {
			t.Errorf("node %d checking itself closed %d connections; want 0", i, got)
		}
	}
	if len(held) == 0 {
		t.Fatal("no connections between members")
	}
	time.Sleep(3 * time.Second) // thirty heartbeats of the Fast profile: a window for churn
	for i, n := range nodes {
		if got := n.Stats().DeadConnsClosed; got != 0 {
			t.Errorf("node %d closed %d connections as dead; want 0", i, got)
		}
	}
	for _, c := range held {
		if c.IsClosed() {
			t.Errorf("connection %s to %s was closed; want it kept", c.ID(), c.RemotePeer())
		}
	}
}

// TestDeadConnectionReplacedInPoolOfThree: a's connection to b runs
// through the proxy, and c is connected to both directly, so b's
// heartbeats could reach a through c. When the proxy goes dark, a stream
// from a to b still works again within seconds, over a new connection:
// the relay through c does not hide the dead connection from the check
// (2.4 s here in every run, against about 20 s for yamux's keepalive).
func TestDeadConnectionReplacedInPoolOfThree(t *testing.T) {
	pool, err := mesh.NewPool()
	if err != nil {
		t.Fatal(err)
	}
	b := fastMember(t, pool, "b")
	const echo = "/shoal/test/echo/1.0.0"
	b.Handle(echo, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, s)
	})
	c := fastMember(t, mesh.Pool{Secret: pool.Secret, Bootstrap: []peer.AddrInfo{{ID: b.ID(), Addrs: b.Addrs()}}}, "c")
	a, proxy, _ := behindProxy(t, pool, b)
	allAlive(t, []*mesh.Node{a, b, c})
	throughProxy(t, a, b, proxy)
	roundTrip := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := a.OpenStream(ctx, b.ID(), echo)
		if err != nil {
			return err
		}
		defer s.Reset()
		_ = s.SetDeadline(time.Now().Add(time.Second))
		if _, err := s.Write([]byte{7}); err != nil {
			return err
		}
		var got [1]byte
		_, err = io.ReadFull(s, got[:])
		return err
	}
	if err := roundTrip(); err != nil {
		t.Fatalf("echo before the blackhole: %v", err)
	}

	proxy.blackhole()
	start := time.Now()
	const bound = 10 * time.Second
	var last error
	for time.Since(start) < bound {
		if last = roundTrip(); last == nil {
			break
		}
	}
	if last != nil {
		t.Fatalf("no echo from b %s after the blackhole (last: %v; b %s to a)", time.Since(start), last, stateOf(a, b.ID()))
	}
	t.Logf("blackhole to a working stream: %s (dead connections closed by a: %d)",
		time.Since(start).Round(time.Millisecond), a.Stats().DeadConnsClosed)
	if a.Stats().DeadConnsClosed == 0 {
		t.Errorf("a closed no dead connection; want the proxied one closed by the check")
	}
}
