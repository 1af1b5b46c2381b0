// Package meshtest starts real mesh nodes on loopback for tests and
// benchmarks: one pool, each node with declared GPUs, fast timings.
package meshtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

// Fast is a timing profile for tests: 100 ms heartbeats, dead after 1 s.
func Fast(c *mesh.Config) {
	c.HeartbeatInterval = 100 * time.Millisecond
	c.SuspectAfter = 400 * time.Millisecond
	c.DeadAfter = time.Second
}

// Config returns a loopback-only config for a new identity in pool p.
func Config(tb testing.TB, p mesh.Pool, name string) mesh.Config {
	tb.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		tb.Fatal(err)
	}
	c := mesh.DefaultConfig()
	c.Key = key
	c.Pool = p
	c.Name = name
	c.Fingerprint = []byte(name)
	c.ListenAddrs = []multiaddr.Multiaddr{
		multiaddr.StringCast("/ip4/127.0.0.1/udp/0/quic-v1"),
		multiaddr.StringCast("/ip4/127.0.0.1/tcp/0"),
	}
	c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return c
}

// Inventory is a declared inventory of one GPU named name with vram GiB.
func Inventory(name string, vramGiB uint64) hardware.Inventory {
	return hardware.Inventory{
		GPUs: []hardware.GPU{{
			UUID: "declared-" + name, Name: name, VRAMTotalBytes: vramGiB << 30,
			VRAMFreeBytes: vramGiB << 30, CUDACores: 1024, Source: hardware.SourceDeclared,
		}},
		MeasuredAt: time.Now(),
	}
}

// Start creates a node from c, closes it when the test ends, and gives it
// a declared inventory.
func Start(tb testing.TB, c mesh.Config) *mesh.Node {
	tb.Helper()
	n, err := mesh.New(context.Background(), c)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.Close() })
	n.SetInventory(Inventory("GPU-"+c.Name, 24))
	return n
}

// Pool starts size nodes in one pool; nodes 1.. join through node 0's token.
// tune, when not nil, adjusts each config.
func Pool(tb testing.TB, size int, tune func(*mesh.Config)) []*mesh.Node {
	tb.Helper()
	p, err := mesh.NewPool()
	if err != nil {
		tb.Fatal(err)
	}
	nodes := make([]*mesh.Node, 0, size)
	for i := 0; i < size; i++ {
		c := Config(tb, p, fmt.Sprintf("n%02d", i))
		if i > 0 {
			tok, err := mesh.ParseToken(nodes[0].Token())
			if err != nil {
				tb.Fatal(err)
			}
			c.Pool = tok
		}
		if tune != nil {
			tune(&c)
		}
		n := Start(tb, c)
		if i > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := n.Join(ctx)
			cancel()
			if err != nil {
				tb.Fatalf("node %d join: %v", i, err)
			}
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// Sees reports whether n lists every peer of want in state s with a record.
func Sees(n *mesh.Node, want []*mesh.Node, s mesh.State) bool {
	got := map[string]mesh.Member{}
	for _, m := range n.Members() {
		got[m.PeerID.String()] = m
	}
	for _, w := range want {
		m, ok := got[w.ID().String()]
		if !ok || m.State != s || m.Record == nil {
			return false
		}
	}
	return true
}

// Eventually polls cond every 10 ms until it holds or d passes.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
