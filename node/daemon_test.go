package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// daemonFixture is a Daemon wired to a fake mesh, prober and clock.
type daemonFixture struct {
	d     *Daemon
	mesh  *fakeMesh // ID is set when Run builds the mesh
	clock *fakeClock
	cfg   chan mesh.Config // the mesh.Config Run built, once
	errc  chan error       // Run's result
}

func newDaemonFixture(t *testing.T, home string, mod func(*Config)) *daemonFixture {
	t.Helper()
	f := &daemonFixture{mesh: newFakeMesh(""), clock: newFakeClock(), cfg: make(chan mesh.Config, 1), errc: make(chan error, 1)}
	cfg := DefaultConfig()
	cfg.Home = home
	cfg.MDNS, cfg.NATPortMap = false, false
	cfg.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.Name = "test-node"
	cfg.GPUs = []hardware.GPU{{Name: "RTX 3090", VRAMTotalBytes: 24 << 30}}
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	cfg.Clock = f.clock
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.newPool = func() (mesh.Pool, error) { return testPool(4), nil }
	d.newMesh = func(ctx context.Context, mc mesh.Config) (meshNode, error) {
		f.mesh.id = mustPeerID(mc)
		f.cfg <- mc
		return f.mesh, nil
	}
	d.newProber = func(declared []hardware.GPU, _ string) prober {
		return &fakeProber{mode: "declared", inv: hardware.Inventory{GPUs: declared, MeasuredAt: f.clock.now}}
	}
	f.d = d
	return f
}

// start runs the daemon and waits until it is ready (or fails the test).
func (f *daemonFixture) start(t *testing.T, ctx context.Context) {
	t.Helper()
	go func() { f.errc <- f.d.Run(ctx) }()
	select {
	case <-f.d.Ready():
	case err := <-f.errc:
		t.Fatalf("Run before ready = %v", err)
	}
	t.Cleanup(func() {
		f.d.Leave()
		recv(t, f.errc, "Run to return at cleanup")
	})
}

func (f *daemonFixture) wait(t *testing.T) error {
	t.Helper()
	err := recv(t, f.errc, "Run to return")
	f.errc <- err // for Cleanup
	return err
}

func TestDaemonRunServesAndLeaves(t *testing.T) {
	home := t.TempDir()
	// A stale socket, as a SIGKILLed daemon leaves it, is replaced.
	if err := os.WriteFile(filepath.Join(home, SocketFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newDaemonFixture(t, home, nil)
	other := peer.AddrInfo{ID: testPeer(t, 1), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.1.1.1/tcp/4242")}}
	f.mesh.known = []peer.AddrInfo{other}
	f.start(t, context.Background())

	mc := recv(t, f.cfg, "mesh config")
	if mc.Pool.Secret != testPool(4).Secret || mc.MDNS || mc.NATPortMap || mc.Name != "test-node" ||
		len(mc.Fingerprint) != 32 || mc.Metrics == nil || mc.Key == nil {
		t.Errorf("mesh.Config = %+v; want the new pool, no mdns/nat, name, fingerprint, metrics, key", mc)
	}
	info := f.d.Info()
	if !info.Created || info.Resumed || info.Token != "shoal1.faketoken" || info.PeerID != f.mesh.id {
		t.Errorf("Info = %+v; want created, not resumed, token, peer %s", info, f.mesh.id)
	}
	if j, _, _ := f.mesh.counts(); j != 0 {
		t.Errorf("Join called %d times on a new pool with no peers; want 0", j)
	}
	if _, ok, err := loadPool(home); !ok || err != nil {
		t.Errorf("pool.json after up = %v, %v; want written", ok, err)
	}
	fi, err := os.Stat(filepath.Join(home, SocketFile))
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket = %v, %v; want a 0600 socket", fi, err)
	}
	if err := CheckHomeFree(home); !errors.Is(err, ErrHomeLocked) {
		t.Errorf("CheckHomeFree while running = %v; want ErrHomeLocked", err)
	}

	// Declared GPUs reach the mesh with UUIDs seeded by the peer ID.
	inv := recv(t, f.mesh.inventories, "first inventory")
	if len(inv.GPUs) != 1 || inv.GPUs[0].Source != hardware.SourceDeclared || inv.GPUs[0].UUID == "" {
		t.Errorf("first inventory GPUs = %+v; want one declared GPU with a UUID", inv.GPUs)
	}
	want := hardware.AssignDeclared([]hardware.GPU{{Name: "RTX 3090", VRAMTotalBytes: 24 << 30}}, f.mesh.id.String())
	if inv.GPUs[0].UUID != want[0].UUID {
		t.Errorf("declared GPU UUID = %s; want %s (seeded by peer ID)", inv.GPUs[0].UUID, want[0].UUID)
	}

	// Each inventory tick probes and publishes again.
	tickers := map[string]*fakeTicker{}
	for range 2 {
		tk := recv(t, f.clock.tickers, "ticker")
		tickers[tk.d.String()] = tk
	}
	invTick, peersTick := tickers[DefaultInventoryInterval.String()], tickers[DefaultPeersSaveInterval.String()]
	if invTick == nil || peersTick == nil {
		t.Fatalf("tickers = %v; want %v and %v", tickers, DefaultInventoryInterval, DefaultPeersSaveInterval)
	}
	invTick.c <- f.clock.now
	recv(t, f.mesh.inventories, "inventory after tick")
	peersTick.c <- f.clock.now
	invTick.c <- f.clock.now // the loop handled the peers tick once this is taken
	recv(t, f.mesh.inventories, "inventory after second tick")
	if got, err := loadPeers(home); err != nil || len(got) != 1 || got[0].ID != other.ID {
		t.Errorf("peers.json after save tick = %v, %v; want [%s]", got, err, other.ID)
	}

	c := NewClient(home)
	st, err := c.Status(context.Background())
	if err != nil || !st.Ready || st.PeerID != f.mesh.id.String() || st.InventoryMode != "declared" || !st.StartedAt.Equal(f.clock.now) {
		t.Errorf("Status = %+v, %v; want ready, peer %s, declared, started %v", st, err, f.mesh.id, f.clock.now)
	}

	lr, err := c.Leave(context.Background())
	if err != nil || lr.PoolID != "fakepool" {
		t.Fatalf("Leave = %+v, %v; want pool fakepool", lr, err)
	}
	if err := f.wait(t); err != nil {
		t.Errorf("Run after leave = %v; want nil", err)
	}
	if _, leaves, closes := f.mesh.counts(); leaves != 1 || closes != 1 {
		t.Errorf("mesh Leave, Close calls = %d, %d; want 1, 1", leaves, closes)
	}
	if _, err := os.Stat(filepath.Join(home, SocketFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket after leave: %v; want removed", err)
	}
	if err := CheckHomeFree(home); err != nil {
		t.Errorf("CheckHomeFree after leave = %v; want nil", err)
	}
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Status after leave = %v; want ErrNoDaemon", err)
	}
}

func TestDaemonStopsOnCancel(t *testing.T) {
	f := newDaemonFixture(t, t.TempDir(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	f.start(t, ctx)
	cancel()
	if err := f.wait(t); err != nil {
		t.Errorf("Run after cancel = %v; want nil", err)
	}
	if _, leaves, _ := f.mesh.counts(); leaves != 1 {
		t.Errorf("mesh Leave calls after cancel = %d; want 1 (graceful)", leaves)
	}
}

func TestDaemonFatal(t *testing.T) {
	home := t.TempDir()
	f := newDaemonFixture(t, home, nil)
	f.start(t, context.Background())
	f.mesh.fatal <- fmt.Errorf("seen again: %w", mesh.ErrDuplicateIdentity)
	err := f.wait(t)
	if !errors.Is(err, mesh.ErrDuplicateIdentity) || !strings.Contains(err.Error(), "shoal reset-identity --home "+home) {
		t.Errorf("Run after fatal = %v; want ErrDuplicateIdentity telling to run shoal reset-identity", err)
	}
	if _, leaves, closes := f.mesh.counts(); leaves != 0 || closes != 1 {
		t.Errorf("mesh Leave, Close after fatal = %d, %d; want 0, 1", leaves, closes)
	}
}

func TestDaemonJoin(t *testing.T) {
	bootstrap := peer.AddrInfo{ID: testPeer(t, 1), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/192.0.2.1/udp/4242/quic-v1")}}
	joinPool := testPool(6)
	joinPool.Bootstrap = []peer.AddrInfo{bootstrap}
	tests := []struct {
		name      string
		join      bool // join a pool with a bootstrap peer; else up with a saved peer
		joinErr   error
		wantErr   error
		wantInErr []string
		wantJoins int
	}{
		{"join ok", true, nil, nil, nil, 1},
		{"join unreachable", true, mesh.ErrNoBootstrap, mesh.ErrNoBootstrap, []string{"192.0.2.1", "token", "firewall"}, 1},
		{"join timeout", true, context.DeadlineExceeded, ErrJoin, []string{"192.0.2.1"}, 1},
		{"join duplicate", true, mesh.ErrDuplicateIdentity, mesh.ErrDuplicateIdentity, []string{"shoal reset-identity --home"}, 1},
		{"join refused", true, mesh.ErrAdmissionRefused, mesh.ErrAdmissionRefused, []string{"shoal token"}, 1},
		{"up resume alone", false, mesh.ErrNoBootstrap, nil, nil, 1},
		{"up resume duplicate", false, mesh.ErrDuplicateIdentity, mesh.ErrDuplicateIdentity, []string{"reset-identity"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			if !tt.join {
				if err := savePool(home, testPool(6)); err != nil {
					t.Fatal(err)
				}
				if err := writePeers(home, formatP2PAddrs([]peer.AddrInfo{bootstrap}), newFakeClock().now); err != nil {
					t.Fatal(err)
				}
			}
			f := newDaemonFixture(t, home, func(c *Config) {
				if tt.join {
					c.Join = &joinPool
				}
			})
			f.mesh.joinErr = tt.joinErr
			go func() { f.errc <- f.d.Run(context.Background()) }()
			var err error
			select {
			case <-f.d.Ready():
				f.d.Leave()
				err = f.wait(t)
			case err = <-f.errc:
			}
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run = %v; want %v", err, tt.wantErr)
			}
			for _, s := range tt.wantInErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Run error %q does not mention %q", err, s)
				}
			}
			if p, ok, _ := loadPool(home); tt.join && (ok && p.Secret == joinPool.Secret) != (tt.wantErr == nil) {
				t.Errorf("pool.json holds the joined pool: %v; want %v (only after a successful join)", ok && p.Secret == joinPool.Secret, tt.wantErr == nil)
			}
			if joins, _, _ := f.mesh.counts(); joins != tt.wantJoins {
				t.Errorf("Join calls = %d; want %d", joins, tt.wantJoins)
			}
			mc := recv(t, f.cfg, "mesh config")
			if tt.join && (len(mc.Pool.Bootstrap) != 1 || mc.Pool.Bootstrap[0].ID != bootstrap.ID) {
				t.Errorf("mesh pool bootstrap = %v; want %v", mc.Pool.Bootstrap, bootstrap)
			}
			if !tt.join && (len(mc.ExtraPeers) != 1 || mc.ExtraPeers[0].ID != bootstrap.ID) {
				t.Errorf("mesh ExtraPeers = %v; want the saved peer %v", mc.ExtraPeers, bootstrap)
			}
		})
	}
}

func TestDaemonListenInUse(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)
	f := newDaemonFixture(t, t.TempDir(), func(c *Config) {
		c.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast(addr)}
	})
	err = f.d.Run(context.Background())
	var inUse *ListenInUseError
	if !errors.As(err, &inUse) || !errors.Is(err, ErrListenInUse) || inUse.Addr != addr {
		t.Fatalf("Run on a taken port = %v; want ListenInUseError for %s", err, addr)
	}
	want := "listen address " + addr + " is in use; pass --listen with another port (or port 0)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Run error = %q; want it to say %q", err, want)
	}
	select {
	case <-f.cfg:
		t.Error("the mesh was started on a taken port")
	default:
	}
}

func TestDaemonSecondOnSameHome(t *testing.T) {
	home := t.TempDir()
	f := newDaemonFixture(t, home, nil)
	f.start(t, context.Background())
	g := newDaemonFixture(t, home, nil)
	err := g.d.Run(context.Background())
	if !errors.Is(err, ErrHomeLocked) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("second Run on one home = %v; want ErrHomeLocked naming pid %d", err, os.Getpid())
	}
	if err := f.d.Run(context.Background()); err == nil {
		t.Error("Run called twice = nil; want an error")
	}
}

func TestProbeLoggerReportsChangesOnly(t *testing.T) {
	var n int
	log := slog.New(countHandler{&n})
	var p probeLogger
	steps := []struct {
		err  error
		want int // log records so far
	}{
		{nil, 0},
		{errors.New("gpu 1 unreadable"), 1},
		{errors.New("gpu 1 unreadable"), 1},
		{errors.New("disk unreadable"), 2},
		{nil, 3},
		{nil, 3},
	}
	for i, s := range steps {
		p.report(log, s.err)
		if n != s.want {
			t.Errorf("after step %d (%v): %d log records; want %d", i, s.err, n, s.want)
		}
	}
}

type countHandler struct{ n *int }

func (h countHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h countHandler) Handle(context.Context, slog.Record) error { *h.n++; return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h countHandler) WithGroup(string) slog.Handler             { return h }
