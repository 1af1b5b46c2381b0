package node

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/weightcache"
)

// WeightsDir is the weight cache's directory inside the home.
const WeightsDir = "weights"

// Weight cache timing. The DHT keeps provider records for 48 h; announcing
// every hour keeps them alive across restarts of other members and heals
// a DHT that lost them. The model list in the node record is re-read every
// modelsInterval, so an eviction inside a fetch or an import reaches the
// record soon even though no control call asked for it.
const (
	provideInterval = time.Hour
	modelsInterval  = 10 * time.Second
	provideTimeout  = 30 * time.Second
)

// weightsMesh is what the weight cache needs of the mesh: streams, DHT
// providers, the members' records (for names and who holds what), and a
// place in this node's record for the complete models. *mesh.Node
// satisfies it.
type weightsMesh interface {
	weightcache.Dialer
	weightcache.Finder
	weightcache.Announcer
	weightcache.Registrar
	Membership
	ID() peer.ID
	SetModels(ms []mesh.ModelRef)
}

var _ weightsMesh = (*mesh.Node)(nil)

// weights is the daemon's weight cache: the store under <home>/weights,
// its server on the mesh, the fetcher, and the goroutine that announces
// what the store holds. startWeights starts it; close stops it.
type weights struct {
	store *weightcache.Store
	srv   *weightcache.Server
	fetch *weightcache.Fetcher
	mesh  weightsMesh
	log   *slog.Logger

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startWeights opens the store in home with a size limit of maxBytes
// (0: none), serves it on m and starts announcing it.
//
// Chunks travel over bulk connections (see weightcache.BulkProtocol) served
// on bulkAddr ("host:port"; "" serves none, so peers use libp2p streams).
// Where that port cannot be had, a free one is taken.
func startWeights(home string, maxBytes int64, m weightsMesh, bulkAddr string, log *slog.Logger) (*weights, error) {
	log = log.With("component", "weights")
	st, err := weightcache.Open(weightcache.Config{Dir: filepath.Join(home, WeightsDir), MaxBytes: maxBytes, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("node: weight cache: %w", err)
	}
	// Each node starts its fetches at its own place in a model (seeded by
	// its peer ID), so nodes pulling one model at once trade chunks.
	seed := fnv.New64a()
	_, _ = seed.Write([]byte(m.ID()))
	traffic := trafficOf(m)
	f, err := weightcache.NewFetcher(st, m, poolFinder{m}, m, weightcache.FetchConfig{Seed: seed.Sum64() | 1, Traffic: traffic})
	if err != nil {
		return nil, fmt.Errorf("node: weight fetcher: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &weights{
		store: st, fetch: f, mesh: m, log: log,
		kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
	}
	w.srv = weightcache.Serve(st, m)
	if bulkAddr != "" {
		addr, err := w.srv.ListenBulk(bulkAddr, traffic)
		if err != nil {
			host, _, _ := net.SplitHostPort(bulkAddr)
			log.Warn("bulk port taken; using a free one", "want", bulkAddr, "err", err)
			addr, err = w.srv.ListenBulk(net.JoinHostPort(host, "0"), traffic)
		}
		if err != nil {
			log.Warn("no bulk connections; chunks go over libp2p streams", "err", err)
		} else {
			log.Info("serving weights over bulk connections", "addr", addr)
		}
	}
	w.publishModels()
	go w.run(ctx)
	w.changed()
	return w, nil
}

// close stops announcing and serving; it waits for the sessions being
// served and the announcing goroutine.
func (w *weights) close() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
		w.srv.Close()
	})
}

// changed says the set of complete models may have changed: the record is
// refreshed and every complete model announced, soon and once.
func (w *weights) changed() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *weights) run(ctx context.Context) {
	defer close(w.done)
	provide := time.NewTicker(provideInterval)
	defer provide.Stop()
	models := time.NewTicker(modelsInterval)
	defer models.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-models.C:
			w.publishModels()
		case <-w.kick:
			w.publishModels()
			w.provideAll(ctx)
		case <-provide.C:
			w.provideAll(ctx)
		}
	}
}

func (w *weights) provideAll(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, provideTimeout)
	defer cancel()
	if err := w.store.ProvideAll(pctx, w.mesh); err != nil && ctx.Err() == nil {
		w.log.Debug("announcing models failed (a pool of one has no one to tell)", "err", err)
	}
}

// provide announces one model now, bounded by provideTimeout, so a member
// that asks right after an import or a pull finds this node.
func (w *weights) provide(ctx context.Context, id string) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), provideTimeout)
	defer cancel()
	if err := w.mesh.Provide(pctx, id); err != nil {
		w.log.Debug("announcing model failed", "id", id, "err", err)
	}
}

// publishModels puts the complete models in this node's record.
func (w *weights) publishModels() {
	w.mesh.SetModels(recordModels(w.store.List()))
}

// recordModels are the complete models of a store listing (most recently
// used first, as Store.List orders it), as the node record carries them.
func recordModels(infos []weightcache.Info) []mesh.ModelRef {
	out := []mesh.ModelRef{}
	for _, in := range infos {
		if in.State == weightcache.StateComplete {
			out = append(out, mesh.ModelRef{ID: in.ID, Name: in.Name, SizeBytes: in.SizeBytes})
		}
	}
	if len(out) > mesh.MaxRecordModels {
		out = out[:mesh.MaxRecordModels]
	}
	return out
}

// poolFinder finds providers of a model in the DHT and adds the alive
// members whose record lists the model complete: a record reaches every
// member by gossip within seconds, before a DHT announcement may have.
type poolFinder struct{ m weightsMesh }

func (p poolFinder) FindProviders(ctx context.Context, key string, max int) ([]peer.AddrInfo, error) {
	found, err := p.m.FindProviders(ctx, key, max)
	seen := map[peer.ID]bool{}
	for _, ai := range found {
		seen[ai.ID] = true
	}
	for _, id := range holders(p.m.Members(), key) {
		if max > 0 && len(found) >= max {
			break
		}
		if !seen[id] {
			found = append(found, peer.AddrInfo{ID: id}) // OpenStream dials it from its record
		}
	}
	if len(found) > 0 {
		return found, nil
	}
	return found, err
}

// holders are the alive members other than this node whose record lists
// model id complete, sorted.
func holders(ms []mesh.Member, id string) []peer.ID {
	var out []peer.ID
	for _, m := range ms {
		if m.Self || m.State != mesh.StateAlive || m.Record == nil {
			continue
		}
		if slices.ContainsFunc(m.Record.Models, func(r mesh.ModelRef) bool { return r.ID == id }) {
			out = append(out, m.PeerID)
		}
	}
	slices.Sort(out)
	return out
}

// trafficOf counts bulk connection bytes in the same meters as the weight
// streams of m, when m is metered.
func trafficOf(m weightsMesh) weightcache.Traffic {
	if mm, ok := m.(meteredWeights); ok {
		return weightcache.Traffic{In: mm.in.add, Out: mm.out.add}
	}
	return weightcache.Traffic{}
}

// bulkListenAddr is where weight bulk connections are served: the host of
// the first TCP listen address and the port after its port (4243 next to
// the default 4242), or a free port when the TCP port is picked at
// random. No TCP listen address: "" (no bulk connections).
func bulkListenAddr(addrs []multiaddr.Multiaddr) string {
	for _, a := range addrs {
		na, err := manet.ToNetAddr(a) // only plain IP + TCP or UDP addresses convert
		tcp, ok := na.(*net.TCPAddr)
		if err != nil || !ok {
			continue
		}
		port := 0
		if tcp.Port != 0 && tcp.Port < 65535 {
			port = tcp.Port + 1
		}
		return net.JoinHostPort(tcp.IP.String(), strconv.Itoa(port))
	}
	return ""
}
