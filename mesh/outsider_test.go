package mesh_test

import (
	"context"
	"crypto/rand"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// libp2pOpen are the protocols the libp2p host itself serves to any peer
// that completed the secure handshake, before and without pool admission,
// and why that is acceptable. Every other protocol a member registers must
// refuse an outsider: TestOutsiderGetsNoProtocol fails on any protocol in
// a member's Mux that is neither here nor refused, so a new one cannot be
// forgotten.
var libp2pOpen = map[string]string{
	"/ipfs/id/1.0.0":      "identify: the peer's addresses, keys and protocol list, needed before admission can run",
	"/ipfs/id/push/1.0.0": "identify push: the remote tells us about itself; we send nothing",
	"/ipfs/ping/1.0.0":    "ping: echoes 32 bytes",
}

// libp2pOpenPrefix: families of libp2p NAT traversal protocols (AutoNAT,
// hole punching, circuit relay) that answer before admission. AutoNAT
// dials back only the asking peer; hole punching acts only on relayed
// connections. A relay hop answers, but its ACL (relayACL) refuses any
// reservation or connection that is not between admitted members
// (TestRelayServesMembersOnly).
var libp2pOpenPrefix = []string{"/libp2p/autonat/", "/libp2p/dcutr", "/libp2p/circuit/relay/"}

const admitProtocol = "/shoal/admit/1.0.0"

func openToAll(pid protocol.ID) (string, bool) {
	if why, ok := libp2pOpen[string(pid)]; ok {
		return why, true
	}
	for _, p := range libp2pOpenPrefix {
		if strings.HasPrefix(string(pid), p) {
			return "libp2p NAT traversal", true
		}
	}
	return "", false
}

// rawOutsider is a plain libp2p host that knows a member's addresses but
// not the pool secret, and never runs admission.
func rawOutsider(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// probe opens a stream for pid from h to p, sends a request-like frame and
// returns what came back. An error from NewStream means refused outright.
func probe(ctx context.Context, h host.Host, p peer.ID, pid protocol.ID) (int, error) {
	s, err := h.NewStream(ctx, p, pid)
	if err != nil {
		return 0, err
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(15 * time.Second))
	junk := make([]byte, 64)
	_, _ = rand.Read(junk)
	_, _ = s.Write(append([]byte{byte(len(junk))}, junk...))
	_ = s.CloseWrite()
	b, err := io.ReadAll(s)
	return len(b), err
}

// TestOutsiderGetsNoProtocol: a host with the right address and no pool
// secret opens a stream for every protocol a member's host registers; each
// one, but the libp2p basics listed in libp2pOpen and admission itself, is
// reset without a byte. Admission answers only its challenge, and a wrong
// proof gets the outsider disconnected and refused at the next dial.
func TestOutsiderGetsNoProtocol(t *testing.T) {
	nodes := meshtest.Pool(t, 2, meshtest.Fast)
	serveEcho(nodes[0]) // a protocol registered through Node.Handle, as node and weightcache do
	target := nodes[0]
	protos := target.Host().Mux().Protocols()
	t.Logf("protocols of a member: %v", protos)

	out := rawOutsider(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := out.Connect(ctx, peer.AddrInfo{ID: target.ID(), Addrs: target.Addrs()}); err != nil {
		t.Fatalf("outsider Connect = %v; want the connection (admission happens above it)", err)
	}
	var gated []protocol.ID
	for _, pid := range protos {
		if _, open := openToAll(pid); !open && pid != admitProtocol {
			gated = append(gated, pid)
		}
	}
	for _, want := range []string{"/shoal/record/1.0.0", "/shoal/sync/1.0.0", "/shoal/leave/1.0.0", "/meshsub/", "/kad/", echoProtocol} {
		found := false
		for _, pid := range gated {
			found = found || strings.Contains(string(pid), want)
		}
		if !found {
			t.Errorf("no registered protocol matches %q among %v: the enumeration misses the pool's protocols", want, gated)
		}
	}
	// The probe tells a handler that answers outsiders from one that does
	// not: one registered on the raw host, past admission, is caught.
	const leak = "/shoal/test/leak/1"
	target.Host().SetStreamHandler(leak, func(s network.Stream) {
		defer s.Close()
		_, _ = s.Write([]byte("secret"))
	})
	if n, _ := probe(ctx, out, target.ID(), leak); n == 0 {
		t.Errorf("probe read nothing from a handler that answers anyone; it cannot tell open from shut")
	}
	target.Host().RemoveStreamHandler(leak)

	var wg sync.WaitGroup
	for _, pid := range gated {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := probe(ctx, out, target.ID(), pid)
			if n > 0 {
				t.Errorf("outsider read %d bytes from %s (err %v); want a reset without data", n, pid, err)
			}
			if err == nil {
				t.Errorf("outsider stream for %s ended cleanly; want it refused or reset", pid)
			}
		}()
	}
	wg.Wait()

	// Admission: the member proves itself first (nonce and MAC, nothing
	// else); a wrong proof back gets a refusal and a ban.
	s, err := out.NewStream(ctx, target.ID(), admitProtocol)
	if err != nil {
		t.Fatalf("admission stream: %v", err)
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	challenge := make([]byte, 32)
	_, _ = rand.Read(challenge)
	if _, err := s.Write(challenge); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 64)
	if _, err := io.ReadFull(s, resp); err != nil {
		t.Fatalf("admission answer: %v", err)
	}
	_, _ = s.Write(append(make([]byte, 32), 2, '{', '}')) // a wrong MAC and a hello
	_ = s.CloseWrite()
	rest, _ := io.ReadAll(s)
	if len(rest) > 2 {
		t.Errorf("after a wrong proof the member sent %d bytes; want at most the 2-byte refusal", len(rest))
	}
	if !meshtest.Eventually(10*time.Second, func() bool { return len(out.Network().ConnsToPeer(target.ID())) == 0 }) {
		t.Errorf("the outsider is still connected after a wrong proof")
	}
	out.Peerstore().AddAddrs(target.ID(), target.Addrs(), time.Minute)
	for _, pid := range append(gated, admitProtocol) {
		if n, err := probe(ctx, out, target.ID(), pid); err == nil || n > 0 {
			t.Errorf("banned outsider probing %s: %d bytes, %v; want the dial refused", pid, n, err)
		}
	}
	for _, m := range target.Members() {
		if m.PeerID == out.ID() {
			t.Errorf("the member lists the outsider as %v", m.State)
		}
	}
}
