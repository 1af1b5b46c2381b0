package node

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

// testPeer returns a deterministic peer ID for seed.
func testPeer(t testing.TB, seed byte) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testPool(seed byte) mesh.Pool {
	var p mesh.Pool
	for i := range p.Secret {
		p.Secret[i] = seed
	}
	return p
}

// fakeMesh implements meshNode in memory and records what the daemon does
// to it.
type fakeMesh struct {
	id     peer.ID
	poolID string
	token  string
	addrs  []multiaddr.Multiaddr
	fatal  chan error

	joinErr   error
	lookupErr error
	records   map[peer.ID]*mesh.Record

	inventories chan hardware.Inventory // every SetInventory, buffered

	mu      sync.Mutex
	members []mesh.Member
	known   []peer.AddrInfo
	cfg     mesh.Config
	joins   int
	leaves  int
	closes  int
	lookups []peer.ID
}

func newFakeMesh(id peer.ID) *fakeMesh {
	return &fakeMesh{
		id:          id,
		poolID:      "fakepool",
		token:       "shoal1.faketoken",
		addrs:       []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/4242")},
		fatal:       make(chan error, 1),
		records:     map[peer.ID]*mesh.Record{},
		inventories: make(chan hardware.Inventory, 100),
	}
}

func (f *fakeMesh) ID() peer.ID                  { return f.id }
func (f *fakeMesh) PoolID() string               { return f.poolID }
func (f *fakeMesh) Addrs() []multiaddr.Multiaddr { return f.addrs }
func (f *fakeMesh) Token() string                { return f.token }
func (f *fakeMesh) Fatal() <-chan error          { return f.fatal }

func (f *fakeMesh) Members() []mesh.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mesh.Member(nil), f.members...)
}

func (f *fakeMesh) LookupRecord(ctx context.Context, id peer.ID) (*mesh.Record, error) {
	f.mu.Lock()
	f.lookups = append(f.lookups, id)
	f.mu.Unlock()
	if f.lookupErr != nil {
		return nil, f.lookupErr
	}
	r, ok := f.records[id]
	if !ok {
		return nil, mesh.ErrNotFound
	}
	return r, nil
}

func (f *fakeMesh) Join(ctx context.Context) error {
	f.mu.Lock()
	f.joins++
	f.mu.Unlock()
	return f.joinErr
}

func (f *fakeMesh) SetInventory(inv hardware.Inventory) { f.inventories <- inv }

func (f *fakeMesh) KnownPeers() []peer.AddrInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]peer.AddrInfo(nil), f.known...)
}

func (f *fakeMesh) Leave(ctx context.Context) error {
	f.mu.Lock()
	f.leaves++
	f.mu.Unlock()
	return nil
}

func (f *fakeMesh) Close() error {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	return nil
}

func (f *fakeMesh) counts() (joins, leaves, closes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.joins, f.leaves, f.closes
}

var _ meshNode = (*fakeMesh)(nil)

// fakeProber returns a fixed inventory.
type fakeProber struct {
	mode string
	inv  hardware.Inventory
}

func (p *fakeProber) Probe(ctx context.Context) (hardware.Inventory, error) { return p.inv, nil }
func (p *fakeProber) Mode() string                                          { return p.mode }
func (p *fakeProber) NVMLStatus() error                                     { return hardware.ErrGPUsDeclared }
func (p *fakeProber) Close()                                                {}

// fakeClock hands out tickers that fire only when a test sends on them.
type fakeClock struct {
	now     time.Time
	tickers chan *fakeTicker // every NewTicker, buffered
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), tickers: make(chan *fakeTicker, 16)}
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) NewTicker(d time.Duration) Ticker {
	t := &fakeTicker{d: d, c: make(chan time.Time)}
	c.tickers <- t
	return t
}

type fakeTicker struct {
	d time.Duration
	c chan time.Time
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }
func (t *fakeTicker) Stop()               {}

// recv waits for a value on ch or fails the test after a generous deadline.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
