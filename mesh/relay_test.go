package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	relayclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
)

// TestRelayServesMembersOnly runs libp2p's relay service with the ACL a
// member installs: a peer the admitter has not admitted is refused a
// reservation (an outsider cannot use a reachable member as its relay),
// an admitted one is granted it. A member's host runs the service only
// once AutoNAT finds it publicly reachable, which loopback never is, so
// the service is started here directly.
func TestRelayServesMembersOnly(t *testing.T) {
	newHost := func(opts ...libp2p.Option) host.Host {
		h, err := libp2p.New(append([]libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		return h
	}
	r := newHost(libp2p.DisableRelay())
	adm := newAdmitter(make([]byte, 32), r.ID(), admitHello{})
	svc, err := relayv2.New(r, relayv2.WithACL(relayACL{adm}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	at := peer.AddrInfo{ID: r.ID(), Addrs: r.Addrs()}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	outsider, member := newHost(), newHost()
	adm.mu.Lock()
	adm.admitted[member.ID()] = admitHello{}
	adm.mu.Unlock()
	for _, h := range []host.Host{outsider, member} {
		if err := h.Connect(ctx, at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := relayclient.Reserve(ctx, outsider, at); err == nil {
		t.Errorf("an outsider got a relay reservation; want it refused")
	}
	if _, err := relayclient.Reserve(ctx, member, at); err != nil {
		t.Errorf("an admitted member's reservation = %v; want it granted", err)
	}
	if (relayACL{adm}).AllowConnect(member.ID(), nil, outsider.ID()) || (relayACL{adm}).AllowConnect(outsider.ID(), nil, member.ID()) {
		t.Errorf("the relay would connect a member and an outsider; want members to members only")
	}
	if !(relayACL{adm}).AllowConnect(member.ID(), nil, member.ID()) {
		t.Errorf("the relay refuses to connect admitted members")
	}
}
