package mesh_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

const echoProtocol = "/shoal/test/echo/1"

func serveEcho(n *mesh.Node) {
	n.Handle(echoProtocol, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, s)
	})
}

func echo(ctx context.Context, from *mesh.Node, to peer.ID, msg string) (string, error) {
	s, err := from.OpenStream(ctx, to, echoProtocol)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if _, err := s.Write([]byte(msg)); err != nil {
		return "", err
	}
	_ = s.CloseWrite()
	b, err := io.ReadAll(s)
	return string(b), err
}

func TestHandleServesMembersOnly(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	serveEcho(nodes[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// nodes[2] joined through nodes[0] and may not have dialled nodes[1]:
	// OpenStream connects and runs admission itself.
	serveEcho(nodes[1])
	for i, from := range nodes[1:] {
		got, err := echo(ctx, from, nodes[0].ID(), "hello")
		if err != nil || got != "hello" {
			t.Errorf("echo from node %d = %q, %v; want hello", i+1, got, err)
		}
	}
	if got, err := echo(ctx, nodes[2], nodes[1].ID(), "x"); err != nil || got != "x" {
		t.Errorf("echo node 2 → node 1 = %q, %v; want x", got, err)
	}

	// A node of another pool, told the right address, gets nothing.
	other, _ := mesh.NewPool()
	out := meshtest.Start(t, meshtest.Config(t, other, "outsider"))
	out.Host().Peerstore().AddAddrs(nodes[0].ID(), nodes[0].Addrs(), time.Minute)
	if got, err := echo(ctx, out, nodes[0].ID(), "let me in"); !errors.Is(err, mesh.ErrNotMember) {
		t.Errorf("outsider echo = %q, %v; want ErrNotMember", got, err)
	}
	// Even on the raw host, past our OpenStream, the handler stays shut.
	raw, err := out.Host().NewStream(ctx, nodes[0].ID(), echoProtocol)
	if err == nil {
		_, _ = raw.Write([]byte("raw"))
		_ = raw.CloseWrite()
		b, _ := io.ReadAll(raw)
		if len(b) > 0 {
			t.Errorf("outsider read %q through the raw host; want nothing", b)
		}
	}
}

func TestProvideAndFindProviders(t *testing.T) {
	nodes := meshtest.Pool(t, 4, meshtest.Fast)
	for _, n := range nodes {
		meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, n := range nodes[1:3] {
		if err := n.Provide(ctx, "model-a"); err != nil {
			t.Fatalf("Provide: %v", err)
		}
	}
	want := map[peer.ID]bool{nodes[1].ID(): true, nodes[2].ID(): true}
	var got []peer.AddrInfo
	ok := meshtest.Eventually(10*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		got, _ = nodes[3].FindProviders(c, "model-a", 0)
		return len(got) == len(want)
	})
	if !ok {
		t.Fatalf("FindProviders(model-a) = %v; want nodes 1 and 2", got)
	}
	for _, ai := range got {
		if !want[ai.ID] {
			t.Errorf("FindProviders(model-a) lists %s; want only nodes 1 and 2", ai.ID)
		}
	}
	// A provider does not list itself.
	self, _ := nodes[1].FindProviders(ctx, "model-a", 0)
	for _, ai := range self {
		if ai.ID == nodes[1].ID() {
			t.Errorf("FindProviders on a provider lists the provider itself")
		}
	}
	c, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if none, _ := nodes[3].FindProviders(c, "model-b", 0); len(none) != 0 {
		t.Errorf("FindProviders(model-b) = %v; want none", none)
	}
}
