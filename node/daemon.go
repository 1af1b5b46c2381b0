package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

// maxSocketPath is the longest path a unix socket can be bound at on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Daemon is the shoal daemon of one home. Make it with New, run it once with
// Run. Ready, Info and Leave may be called from any goroutine.
type Daemon struct {
	cfg      Config
	declared []hardware.GPU // cfg.GPUs then cfg.GPUFile, before AssignDeclared
	log      *slog.Logger

	// Seams for tests; New sets the real ones.
	newMesh   func(ctx context.Context, cfg mesh.Config) (meshNode, error)
	newPool   func() (mesh.Pool, error)
	newProber func(declared []hardware.GPU, diskPath string) prober

	started   atomic.Bool
	ready     atomic.Bool
	readyCh   chan struct{}
	leaveCh   chan struct{}
	leaveOnce sync.Once

	mu   sync.Mutex
	info Info

	// savedPeers is what peers.json holds, as written last (run loop only).
	savedPeers []string
}

// Info describes a running daemon. Daemon.Info returns it once Ready is
// closed.
type Info struct {
	Home    string
	PeerID  peer.ID
	PoolID  string
	Token   string // join token of the pool, with this node as a bootstrap
	Resumed bool   // the pool was already in the home (not new, not a new join)
	Created bool   // the pool was created by this start (`up` on an empty home)
	Addrs   []multiaddr.Multiaddr
	Socket  string // path of the control socket
}

// New validates cfg, reads the declared GPU file and checks that the home
// can run the requested pool (a join into a home of another pool needs
// Force). It starts nothing and takes no lock, so a CLI can call it to
// report configuration errors before it starts a daemon in the background.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	declared := append([]hardware.GPU(nil), cfg.GPUs...)
	if cfg.GPUFile != "" {
		gpus, err := hardware.LoadGPUFile(cfg.GPUFile)
		if err != nil {
			return nil, fmt.Errorf("node: GPU file %s: %w", cfg.GPUFile, err)
		}
		declared = append(declared, gpus...)
	}
	if _, _, err := choosePool(cfg.Home, cfg.Join, cfg.Force, func() (mesh.Pool, error) { return mesh.Pool{}, nil }); err != nil {
		return nil, err
	}
	return &Daemon{
		cfg:      cfg,
		declared: declared,
		log:      cfg.Logger,
		newMesh: func(ctx context.Context, mc mesh.Config) (meshNode, error) {
			n, err := mesh.New(ctx, mc)
			if err != nil {
				return nil, err
			}
			return n, nil
		},
		newPool: mesh.NewPool,
		newProber: func(declared []hardware.GPU, diskPath string) prober {
			return hwProber{hardware.NewProber(declared, diskPath)}
		},
		readyCh: make(chan struct{}),
		leaveCh: make(chan struct{}),
	}, nil
}

// Home is the daemon's home directory.
func (d *Daemon) Home() string { return d.cfg.Home }

// Ready is closed once the daemon is in its pool and serves its control API.
// If Run fails before that, Ready is never closed: wait for Run as well.
func (d *Daemon) Ready() <-chan struct{} { return d.readyCh }

// Info describes the running daemon; it is complete once Ready is closed.
func (d *Daemon) Info() Info {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info
}

// Leave asks a running daemon to leave its pool gracefully and stop; Run
// then returns nil. It does not wait. POST /v1/leave calls it.
func (d *Daemon) Leave() {
	d.leaveOnce.Do(func() { close(d.leaveCh) })
}

// Run runs the daemon until ctx ends or Leave is called (both leave the
// pool gracefully and return nil), or until the mesh fails (returns that
// error). It may be called once.
func (d *Daemon) Run(ctx context.Context) error {
	if !d.started.CompareAndSwap(false, true) {
		return errors.New("node: Daemon.Run called twice")
	}
	cfg := d.cfg
	home := cfg.Home
	startedAt := cfg.Clock.Now()

	if err := ensureHome(home); err != nil {
		return err
	}
	lock, err := lockHome(home)
	if err != nil {
		return err
	}
	defer lock.release()

	key, created, err := loadOrCreateIdentity(home)
	if err != nil {
		return err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return fmt.Errorf("node: peer ID: %w", err)
	}
	log := d.log.With("self", id.String())
	if created {
		log.Info("created a new node identity", "file", filepath.Join(home, IdentityFile))
	}
	fp, err := Fingerprint(home)
	if err != nil {
		return err
	}

	pool, resumed, err := choosePool(home, cfg.Join, cfg.Force, d.newPool)
	if err != nil {
		return err
	}
	poolCreated := cfg.Join == nil && !resumed
	extra, err := loadPeers(home)
	if err != nil {
		log.Warn("ignoring unreadable peers file; starting from the pool's bootstrap peers", "err", err)
	}
	extra = withoutPeer(extra, id)
	pool.Bootstrap = withoutPeer(pool.Bootstrap, id)

	var declared []hardware.GPU
	if len(d.declared) > 0 {
		declared = hardware.AssignDeclared(d.declared, id.String())
	}
	pr := d.newProber(declared, home)
	defer pr.Close()
	log.Info("hardware inventory", "mode", pr.Mode(), "nvml", errString(pr.NVMLStatus()), "declared_gpus", len(declared))
	var probeLog probeLogger
	inv, err := pr.Probe(ctx)
	probeLog.report(log, err)

	if err := checkListen(cfg.ListenAddrs); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	met := newMetrics(reg, cfg.Version)

	m, err := d.newMesh(ctx, mesh.Config{
		Key:         key,
		Pool:        pool,
		ListenAddrs: cfg.ListenAddrs,
		ExtraPeers:  extra,
		Name:        cfg.Name,
		Version:     cfg.Version,
		Price:       meshPrice(cfg.Prices),
		Fingerprint: fp,
		MDNS:        cfg.MDNS,
		NATPortMap:  cfg.NATPortMap,
		Logger:      log,
		Metrics:     reg,
	})
	if err != nil {
		if inUse := checkListen(cfg.ListenAddrs); inUse != nil {
			return inUse
		}
		if errors.Is(err, mesh.ErrListen) {
			return fmt.Errorf("node: start mesh: %w; pass --listen with another port (or port 0)", err)
		}
		return fmt.Errorf("node: start mesh: %w", err)
	}
	defer m.Close()
	met.observe(inv)
	m.SetInventory(inv)

	if len(pool.Bootstrap)+len(extra) > 0 {
		if err := d.join(ctx, log, m, pool, extra); err != nil {
			if ctx.Err() != nil {
				log.Info("stopped before joining the pool", "err", err)
				return nil
			}
			return err
		}
	}
	// The home changes pool only once the pool took us in: a join that
	// fails leaves the home as it was.
	if !(resumed && cfg.Join == nil) {
		if err := adoptPool(home, pool); err != nil {
			return err
		}
	}
	log.Info("in pool", "pool", m.PoolID(), "resumed", resumed, "created", poolCreated)

	var wc *weights
	if wm, ok := m.(weightsMesh); ok {
		if wc, err = startWeights(home, max(cfg.CacheBytes, 0), meteredWeights{wm, met.weightsIn, met.weightsOut}, bulkListenAddr(cfg.ListenAddrs), log); err != nil {
			return err
		}
		defer wc.close()
	}

	act := newActivity()
	dep, err := d.startDeploy(home, log, m, inv, act, met.sched)
	if err != nil {
		return err
	}
	defer dep.Close()
	parts, err := d.startServing(home, log, m, dep, wc, act, reg)
	if err != nil {
		return err
	}
	defer parts.close()
	cr, err := d.startCredits(home, log, m, key, dep, parts, inv, reg)
	if err != nil {
		return err
	}
	defer cr.close()

	sock := filepath.Join(home, SocketFile)
	ln, err := listenControl(sock)
	if err != nil {
		return err
	}
	cs := &controlServer{
		mesh: m,
		info: controlInfo{
			Name: cfg.Name, Version: cfg.Version, Home: home,
			StartedAt: startedAt, Resumed: resumed, Gateway: parts.address(), Runtime: parts.runtime(),
			APIKeys: len(cfg.APIKeys),
		},
		mode:          pr.Mode,
		ready:         d.ready.Load,
		leave:         d.Leave,
		metrics:       reg,
		lookupTimeout: defaultLookupTimeout,
		weights:       wc,
		log:           log,
	}
	srv := &http.Server{
		Handler:           cr.routes(dep.routes(cs.handler())),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	served := false
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		if !served {
			<-serveDone
		}
		os.Remove(sock)
	}()

	d.mu.Lock()
	d.info = Info{
		Home: home, PeerID: id, PoolID: m.PoolID(), Token: m.Token(),
		Resumed: resumed, Created: poolCreated, Addrs: m.Addrs(), Socket: sock,
	}
	d.mu.Unlock()
	d.ready.Store(true)
	close(d.readyCh)
	log.Info("ready", "socket", sock, "addrs", m.Addrs())

	invTick := cfg.Clock.NewTicker(cfg.InventoryInterval)
	defer invTick.Stop()
	peersTick := cfg.Clock.NewTicker(cfg.PeersSaveInterval)
	defer peersTick.Stop()

	var runErr error
	graceful := true
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: leaving the pool")
			break loop
		case <-d.leaveCh:
			log.Info("leave requested: leaving the pool")
			break loop
		case err := <-m.Fatal():
			graceful = false
			runErr = fatalError(home, err)
			log.Error("mesh failed", "err", err)
			break loop
		case err := <-serveDone:
			served = true
			runErr = fmt.Errorf("node: control API on %s stopped: %w", sock, err)
			log.Error("control API failed; leaving the pool", "err", err)
			break loop
		case <-invTick.C():
			inv, err := pr.Probe(ctx)
			if err != nil {
				met.probeErrors.Inc()
			}
			probeLog.report(log, err)
			if inv.MeasuredAt.IsZero() {
				continue // nothing was measured; keep publishing the last inventory
			}
			met.observe(inv)
			m.SetInventory(inv)
			dep.setInventory(inv)
			cr.setInventory(inv)
		case <-peersTick.C():
			d.savePeers(log, m, id)
		}
	}

	d.ready.Store(false)
	d.savePeers(log, m, id)
	if graceful {
		parts.drain(cfg.DrainTimeout, log)
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.LeaveTimeout)
		if err := m.Leave(lctx); err != nil {
			log.Warn("graceful leave failed; the others will see this node as dead", "err", err)
		}
		cancel()
	}
	log.Info("stopped")
	return runErr
}

// join runs the first Join of the mesh with JoinTimeout and turns failures
// into errors that say what to do. An `up` that resumes a pool and finds no
// one runs on alone: someone has to be first when a pool comes back.
func (d *Daemon) join(ctx context.Context, log *slog.Logger, m meshNode, pool mesh.Pool, extra []peer.AddrInfo) error {
	cfg := d.cfg
	jctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	defer cancel()
	err := m.Join(jctx)
	if err == nil {
		return nil
	}
	tried := strings.Join(formatP2PAddrs(append(append([]peer.AddrInfo(nil), pool.Bootstrap...), extra...)), ", ")
	unreachable := errors.Is(err, mesh.ErrNoBootstrap) || errors.Is(err, context.DeadlineExceeded)
	switch {
	case errors.Is(err, mesh.ErrDuplicateIdentity):
		return fatalError(cfg.Home, err)
	case errors.Is(err, mesh.ErrAdmissionRefused):
		return fmt.Errorf("%w: the pool refused this node; the token may be for a pool whose secret changed: "+
			"ask a member for a fresh one (`shoal token`) and run `shoal join TOKEN --force`: %w", ErrJoin, err)
	case unreachable && cfg.Join == nil && ctx.Err() == nil:
		log.Warn("no known member answered; running alone until members come back or reach this node",
			"tried", tried, "err", err)
		return nil
	case unreachable:
		return fmt.Errorf("%w: no pool member answered within %v (tried %s); check that the token is current "+
			"(`shoal token` on a member prints it) and that a firewall does not block the members' listen ports (UDP and TCP): %w",
			ErrJoin, cfg.JoinTimeout, tried, err)
	default:
		return fmt.Errorf("%w: %w", ErrJoin, err)
	}
}

// fatalError explains a mesh failure to the user.
func fatalError(home string, err error) error {
	if errors.Is(err, mesh.ErrDuplicateIdentity) {
		return fmt.Errorf("%w: another machine uses this node's identity (was %s copied from it?); "+
			"run `shoal reset-identity --home %s` on this machine, then start again: %w", ErrJoin, home, home, err)
	}
	return fmt.Errorf("node: mesh stopped: %w", err)
}

func (d *Daemon) savePeers(log *slog.Logger, m meshNode, self peer.ID) {
	peers := withoutPeer(m.KnownPeers(), self)
	if len(peers) == 0 {
		return // keep the last useful list rather than forget it
	}
	// An unchanged list is not written again: a steady pool costs the
	// disk nothing (it was an fsync'd rewrite every few seconds).
	addrs := formatP2PAddrs(peers)
	if slices.Equal(addrs, d.savedPeers) {
		return
	}
	if err := writePeers(d.cfg.Home, addrs, d.cfg.Clock.Now()); err != nil {
		log.Warn("could not save peers", "err", err)
		return
	}
	d.savedPeers = addrs
}

// listenControl binds the control socket, replacing a stale one left by a
// killed daemon (the caller holds the home lock, so no daemon serves it).
func listenControl(sock string) (net.Listener, error) {
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("%w: %s is %d bytes, a unix socket path can have at most %d; pass a shorter --home",
			ErrSocketPath, sock, len(sock), maxSocketPath)
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("node: remove stale control socket: %w", err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("node: control socket: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("node: control socket: %w", err)
	}
	return ln, nil
}

// probeLogger logs a failing hardware probe when its error changes, and
// its recovery, rather than every InventoryInterval.
type probeLogger struct{ last string }

func (p *probeLogger) report(log *slog.Logger, err error) {
	switch {
	case err != nil && err.Error() != p.last:
		log.Warn("hardware probe failed; publishing what it measured", "err", err)
		p.last = err.Error()
	case err == nil && p.last != "":
		log.Info("hardware probe works again")
		p.last = ""
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
