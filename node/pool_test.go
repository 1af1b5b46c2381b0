package node

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/mesh"
)

func TestChoosePool(t *testing.T) {
	a, b, created := testPool(1), testPool(2), testPool(9)
	create := func() (mesh.Pool, error) { return created, nil }
	tests := []struct {
		name        string
		home        *mesh.Pool // pool.json before; nil: none
		join        *mesh.Pool
		force       bool
		want        mesh.Pool
		wantResumed bool
		wantErr     error
	}{
		{"up on empty home creates", nil, nil, false, created, false, nil},
		{"up resumes", &a, nil, false, a, true, nil},
		{"join empty home", nil, &b, false, b, false, nil},
		{"join same pool again", &a, &a, false, a, true, nil},
		{"join other pool refused", &a, &b, false, mesh.Pool{}, false, ErrOtherPool},
		{"join other pool forced", &a, &b, true, b, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			if tt.home != nil {
				if err := savePool(home, *tt.home); err != nil {
					t.Fatal(err)
				}
			}
			got, resumed, err := choosePool(home, tt.join, tt.force, create)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("choosePool = %v; want %v", err, tt.wantErr)
			}
			if got.Secret != tt.want.Secret || resumed != tt.wantResumed {
				t.Errorf("choosePool = pool %s resumed %v; want pool %s resumed %v",
					poolName(got), resumed, poolName(tt.want), tt.wantResumed)
			}
		})
	}
}

func TestChoosePoolCorruptFile(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, PoolFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := testPool(2)
	if _, _, err := choosePool(home, nil, false, nil); !errors.Is(err, ErrBadPoolFile) {
		t.Errorf("up over corrupt pool.json = %v; want ErrBadPoolFile", err)
	}
	if _, _, err := choosePool(home, &b, true, nil); err != nil {
		t.Errorf("forced join over corrupt pool.json = %v; want nil", err)
	}
}

func TestPoolFileRoundTrip(t *testing.T) {
	home := t.TempDir()
	p := testPool(3)
	p.Bootstrap = []peer.AddrInfo{{
		ID:    testPeer(t, 1),
		Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.1/tcp/4242")},
	}}
	if err := savePool(home, p); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(home, PoolFile))
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("pool.json mode = %v; want 0600", got)
	}
	got, ok, err := loadPool(home)
	if err != nil || !ok {
		t.Fatalf("loadPool = %v, %v", ok, err)
	}
	if got.Secret != p.Secret || !reflect.DeepEqual(formatP2PAddrs(got.Bootstrap), formatP2PAddrs(p.Bootstrap)) {
		t.Errorf("loadPool = %+v; want %+v", got, p)
	}
}

func TestPeersFileRoundTripAndForget(t *testing.T) {
	home := t.TempDir()
	peers := []peer.AddrInfo{
		{ID: testPeer(t, 1), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.1/udp/4242/quic-v1")}},
		{ID: testPeer(t, 2), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.2/tcp/4242")}},
	}
	if err := writePeers(home, formatP2PAddrs(peers), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := loadPeers(home)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(formatP2PAddrs(got), formatP2PAddrs(peers)) {
		t.Errorf("loadPeers = %v; want %v", got, peers)
	}
	if got := withoutPeer(got, testPeer(t, 1)); len(got) != 1 || got[0].ID != testPeer(t, 2) {
		t.Errorf("withoutPeer = %v; want only peer 2", got)
	}

	// Same pool: peers kept. Another pool: forgotten.
	if err := adoptPool(home, testPool(1)); err != nil {
		t.Fatal(err)
	}
	if err := adoptPool(home, testPool(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(home, PeersFile)); err != nil {
		t.Errorf("peers.json after re-adopting the same pool: %v; want kept", err)
	}
	if err := adoptPool(home, testPool(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(home, PeersFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("peers.json after switching pools: %v; want removed", err)
	}
}

// A steady pool leaves peers.json alone; a changed member list rewrites it.
func TestPeersFileRewrittenOnlyOnChange(t *testing.T) {
	home := t.TempDir()
	clk := newFakeClock()
	d := &Daemon{cfg: Config{Home: home, Clock: clk}}
	self := testPeer(t, 9)
	m := newFakeMesh(self)
	m.known = []peer.AddrInfo{{ID: testPeer(t, 1), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.1/tcp/4242")}}}
	savedAt := func() string {
		t.Helper()
		var f peersFile
		b, err := os.ReadFile(filepath.Join(home, PeersFile))
		if err == nil {
			err = json.Unmarshal(b, &f)
		}
		if err != nil {
			t.Fatal(err)
		}
		return f.SavedAt.String()
	}
	log := slog.New(slog.DiscardHandler)
	d.savePeers(log, m, self)
	first := savedAt()
	clk.now = clk.now.Add(time.Minute)
	d.savePeers(log, m, self)
	if got := savedAt(); got != first {
		t.Fatalf("peers.json rewritten (saved_at %s, was %s) with the same members", got, first)
	}
	m.known = append(m.known, peer.AddrInfo{ID: testPeer(t, 2), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.2/tcp/4242")}})
	d.savePeers(log, m, self)
	if got := savedAt(); got == first {
		t.Fatal("peers.json not rewritten when a member joined")
	}
	if got, _ := loadPeers(home); len(got) != 2 {
		t.Fatalf("peers.json holds %d peers; want 2", len(got))
	}
}
