package mesh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	lprecord "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/multiformats/go-multistream"

	"github.com/shoalmesh/shoal/hardware"
)

// Node errors.
var (
	// ErrListen: a configured listen address could not be bound.
	ErrListen = errors.New("mesh: cannot listen")
	// ErrNoBootstrap: no member given to join through could be reached.
	ErrNoBootstrap = errors.New("mesh: no bootstrap peer could be reached")
	// ErrNotFound: no verified record of that peer is in the pool.
	ErrNotFound = errors.New("mesh: record not found")
	// ErrClosed: the node is closed.
	ErrClosed = errors.New("mesh: node closed")
)

const (
	recordProtocol = protocol.ID("/shoal/record/1.0.0")
	leaveProtocol  = protocol.ID("/shoal/leave/1.0.0")
	syncProtocol   = protocol.ID("/shoal/sync/1.0.0")
	// maxSyncBytes bounds one membership sync (about 4,000 records).
	maxSyncBytes = 8 << 20
	// maxHeartbeatSize bounds one heartbeat; a node with 16 GPUs sends ~400 B.
	maxHeartbeatSize = 4 << 10
	// maxGossipRPC bounds one GossipSub RPC (several messages and control).
	maxGossipRPC   = 256 << 10
	requestTimeout = 5 * time.Second
	// dhtFallbackAfter is how long a member's record may be missing before
	// fetchRecord asks the DHT rather than the members that relay for it.
	dhtFallbackAfter = 3 * time.Second
	// gossipQueue bounds GossipSub's per-peer outbound, validation and
	// delivery queues, in messages (about 300 B each).
	gossipQueue = 128
)

// Node is one member of a pool: its libp2p host, admission, DHT, gossip and
// membership view. Its methods are safe for concurrent use.
type Node struct {
	cfg         Config
	log         *slog.Logger
	host        host.Host
	dht         *dht.IpfsDHT
	ps          *pubsub.PubSub
	topic       *pubsub.Topic
	sub         *pubsub.Subscription
	adm         *admitter
	bw          *metrics.BandwidthCounter
	mdns        mdns.Service
	met         *meshMetrics
	poolID      string
	instance    string
	fingerprint string
	startedAt   time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // asks the heartbeat loop to beat now
	repub  chan struct{} // asks the publisher to put the record in the DHT
	fatal  chan error
	closed sync.Once

	mu          sync.Mutex
	members     *membership
	inventory   hardware.Inventory
	models      []ModelRef
	free        *FreeCapacity
	record      *Record
	recordBytes []byte
	hbSeq       uint64
	leaving     bool
	inflight    map[peer.ID]*admission
	fetching    map[peer.ID]bool
	checking    map[peer.ID]bool      // members whose connections are being checked
	wanted      map[peer.ID]time.Time // since when a member's record is missing
}

// admission is one handshake under way with a peer; done closes when err is set.
type admission struct {
	done chan struct{}
	err  error
}

// New starts a mesh node: it listens, serves admission, the DHT and gossip,
// and begins heartbeating. It does not wait for other members; Join does.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: identity key: %v", ErrConfig, err)
	}
	inst := make([]byte, 8)
	_, _ = rand.Read(inst)
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "mesh"),
		poolID:      cfg.Pool.ID(),
		instance:    hex.EncodeToString(inst),
		fingerprint: hex.EncodeToString(cfg.Fingerprint),
		startedAt:   time.Now(),
		bw:          metrics.NewBandwidthCounter(),
		kick:        make(chan struct{}, 1),
		repub:       make(chan struct{}, 1),
		fatal:       make(chan error, 1),
		members:     newMembership(timing{cfg.SuspectAfter, cfg.DeadAfter, cfg.ForgetAfter}),
		inflight:    map[peer.ID]*admission{},
		fetching:    map[peer.ID]bool{},
		checking:    map[peer.ID]bool{},
		wanted:      map[peer.ID]time.Time{},
	}
	n.met = newMeshMetrics(cfg.Metrics, n.bw)
	n.adm = newAdmitter(cfg.Pool.Secret[:], self, admitHello{Instance: n.instance, Fingerprint: n.fingerprint, Name: cfg.Name})
	n.adm.duplicate = n.isDuplicate
	n.adm.onAdmit = n.onAdmit
	n.adm.count = func(r string) { n.met.admissions.WithLabelValues(r).Inc() }
	n.ctx, n.cancel = context.WithCancel(context.Background())

	cm, err := connmgr.NewConnManager(cfg.MaxMembersConnected, 2*cfg.MaxMembersConnected+32, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, err
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Key),
		libp2p.ListenAddrs(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Muxer(yamux.ID, yamuxTransport()),
		libp2p.ConnectionGater(gater{n.adm}),
		libp2p.ConnectionManager(cm),
		libp2p.SwarmOpts(swarm.WithDialRanker(tcpFirstDialRanker)),
		libp2p.BandwidthReporter(n.bw),
		libp2p.UserAgent("shoal/" + cfg.Version),
		libp2p.DisableMetrics(),
		libp2p.EnableNATService(),
		libp2p.EnableHolePunching(),
		libp2p.EnableRelayService(relayv2.WithACL(relayACL{n.adm})),
		libp2p.EnableAutoRelayWithPeerSource(n.relayCandidates),
	}
	if cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrListen, err)
	}
	if missing := missingListeners(cfg.ListenAddrs, h.Network().ListenAddresses()); len(missing) > 0 {
		_ = h.Close()
		return nil, fmt.Errorf("%w on %s (address in use?)", ErrListen, strings.Join(missing, ", "))
	}
	n.host = h
	if err := n.startProtocols(ctx); err != nil {
		_ = h.Close()
		return nil, err
	}
	n.refreshRecord(time.Now())
	n.wg.Add(3)
	go n.heartbeatLoop()
	go n.readLoop()
	go n.publishLoop()
	if cfg.MDNS {
		n.mdns = mdns.NewMdnsService(h, "_shoal-"+n.poolID+"._udp", mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			n.log.Warn("mDNS discovery off", "err", err)
		}
	}
	n.log.Info("mesh node started", "peer", self, "pool", n.poolID, "addrs", n.Addrs())
	return n, nil
}

// startProtocols wires admission, record and leave protocols, the DHT and gossip.
func (n *Node) startProtocols(ctx context.Context) error {
	h := n.host
	h.SetStreamHandler(admitProtocol, n.handleAdmit)
	gh := gatedHost{Host: h, a: n.adm}
	gh.SetStreamHandler(recordProtocol, n.handleRecord)
	gh.SetStreamHandler(leaveProtocol, n.handleLeave)
	gh.SetStreamHandler(syncProtocol, n.handleSync)
	h.Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { n.onConnected(c) },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.onDisconnected(c) },
	})

	val := recordValidator{poolID: n.poolID, now: time.Now, reject: func(r string) { n.met.recordsRejected.WithLabelValues(r).Inc() }}
	kad, err := dht.New(gh,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(protocol.ID("/shoal/"+n.poolID)),
		dht.Validator(lprecord.NamespacedValidator{recordNamespace: val}),
		dht.RoutingTableFilter(func(_ any, p peer.ID) bool { return n.adm.isAdmitted(p) }),
		dht.QueryFilter(func(_ any, ai peer.AddrInfo) bool { return n.adm.isAdmitted(ai.ID) }),
		dht.MaxRecordAge(RecordMaxAge),
	)
	if err != nil {
		return fmt.Errorf("mesh: starting DHT: %w", err)
	}
	n.dht = kad
	ps, err := pubsub.NewGossipSub(n.ctx, gh,
		pubsub.WithPeerFilter(func(p peer.ID, _ string) bool { return n.adm.isAdmitted(p) }),
		pubsub.WithMaxMessageSize(maxGossipRPC),
		pubsub.WithPeerExchange(true),
		// Heartbeats go to the mesh, not to every topic peer: flooding
		// multiplies duplicates by the pool size.
		pubsub.WithFloodPublish(false),
		pubsub.WithGossipSubParams(gossipParams()),
		pubsub.WithRawTracer(n.met.gossip),
		// Queues sized for a join storm: the defaults (32) drop heartbeats
		// whenever the machine is briefly busy, and a member whose beats are
		// dropped for SuspectAfter turns suspect though it is alive.
		pubsub.WithPeerOutboundQueueSize(gossipQueue),
		pubsub.WithValidateQueueSize(gossipQueue),
	)
	if err != nil {
		_ = kad.Close()
		return fmt.Errorf("mesh: starting gossip: %w", err)
	}
	n.ps = ps
	topicName := "/shoal/" + n.poolID + "/heartbeat/1"
	if err := ps.RegisterTopicValidator(topicName, n.validateHeartbeat); err != nil {
		_ = kad.Close()
		return err
	}
	if n.topic, err = ps.Join(topicName); err != nil {
		_ = kad.Close()
		return err
	}
	if n.sub, err = n.topic.Subscribe(pubsub.WithBufferSize(gossipQueue)); err != nil {
		_ = kad.Close()
		return err
	}
	return nil
}

// gossipParams trims GossipSub for small, chatty messages: every member
// hears every heartbeat, so the cost per node grows with the pool size times
// the mesh degree plus the message IDs advertised in IHAVE gossip.
func gossipParams() pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D, p.Dlo, p.Dhi, p.Dscore, p.Dout = 4, 3, 8, 2, 1
	p.Dlazy = 4
	p.HistoryGossip = 2
	return p
}

// missingListeners names the configured addresses no listener answers for.
// A port of 0 matches any port of the same transport and IP.
func missingListeners(want, got []multiaddr.Multiaddr) []string {
	key := func(a multiaddr.Multiaddr, anyPort bool) string {
		var parts []string
		multiaddr.ForEach(a, func(c multiaddr.Component) bool {
			v := c.Value()
			if anyPort && (c.Protocol().Code == multiaddr.P_TCP || c.Protocol().Code == multiaddr.P_UDP) {
				v = "*"
			}
			parts = append(parts, c.Protocol().Name+"="+v)
			return true
		})
		return strings.Join(parts, "/")
	}
	have := map[string]bool{}
	for _, a := range got {
		have[key(a, false)] = true
		have[key(a, true)] = true
	}
	var missing []string
	for _, a := range want {
		port := ""
		if v, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil {
			port = v
		} else if v, err := a.ValueForProtocol(multiaddr.P_UDP); err == nil {
			port = v
		}
		if !have[key(a, port == "0")] {
			missing = append(missing, a.String())
		}
	}
	return missing
}

// ID is this node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// PoolID is the public name of the pool.
func (n *Node) PoolID() string { return n.poolID }

// Host is the underlying libp2p host, for protocols layered on the mesh.
func (n *Node) Host() host.Host { return n.host }

// Addrs are this node's dialable addresses, each ending in /p2p/<id>.
func (n *Node) Addrs() []multiaddr.Multiaddr {
	full, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	return full
}

// Fatal yields an error when the node can no longer take part in the pool
// (another copy of its identity is live). The daemon should exit on it.
func (n *Node) Fatal() <-chan error { return n.fatal }

// Token is a join token for this pool naming this node and up to two other
// live members as bootstrap peers.
func (n *Node) Token() string {
	p := Pool{Secret: n.cfg.Pool.Secret}
	p.Bootstrap = append(p.Bootstrap, peer.AddrInfo{ID: n.ID(), Addrs: tokenAddrs(n.host.Addrs())})
	for _, m := range n.Members() {
		if len(p.Bootstrap) == 3 {
			break
		}
		if m.Self || m.State != StateAlive || m.Record == nil {
			continue
		}
		p.Bootstrap = append(p.Bootstrap, peer.AddrInfo{ID: m.PeerID, Addrs: tokenAddrs(parseAddrs(m.Record.Addrs))})
	}
	return EncodeToken(p)
}

// tokenAddrs keeps at most four direct addresses, non-loopback first.
func tokenAddrs(addrs []multiaddr.Multiaddr) []multiaddr.Multiaddr {
	var public, loop []multiaddr.Multiaddr
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(multiaddr.P_CIRCUIT); err == nil {
			continue
		}
		if manet.IsIPLoopback(a) {
			loop = append(loop, a)
		} else {
			public = append(public, a)
		}
	}
	out := append(public, loop...)
	if len(out) > 4 {
		out = out[:4]
	}
	return out
}

func parseAddrs(ss []string) []multiaddr.Multiaddr {
	var out []multiaddr.Multiaddr
	for _, s := range ss {
		if a, err := multiaddr.NewMultiaddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Join connects to the pool's bootstrap peers and the extra peers, and
// returns once at least one of them admitted this node. It fails with
// ErrDuplicateIdentity, ErrAdmissionRefused or ErrNoBootstrap.
func (n *Node) Join(ctx context.Context) error {
	var peers []peer.AddrInfo
	seen := map[peer.ID]bool{}
	for _, ai := range append(append([]peer.AddrInfo{}, n.cfg.Pool.Bootstrap...), n.cfg.ExtraPeers...) {
		if ai.ID == n.ID() {
			return fmt.Errorf("%w (the join token names this very identity)", ErrDuplicateIdentity)
		}
		if seen[ai.ID] || len(ai.Addrs) == 0 {
			continue
		}
		seen[ai.ID] = true
		peers = append(peers, ai)
	}
	if len(peers) == 0 {
		return fmt.Errorf("%w: none given", ErrNoBootstrap)
	}
	type result struct {
		ai  peer.AddrInfo
		err error
	}
	results := make(chan result, len(peers))
	joinCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, ai := range peers {
		go func() { results <- result{ai, n.joinVia(joinCtx, ai)} }()
	}
	var errs []string
	var dup, refused bool
	// Every attempt ends by ctx at the latest, with its last error.
	for range peers {
		select {
		case r := <-results:
			if r.err == nil {
				n.log.Info("joined pool", "pool", n.poolID, "via", r.ai.ID)
				n.afterJoin()
				return nil
			}
			dup = dup || errors.Is(r.err, ErrDuplicateIdentity)
			refused = refused || errors.Is(r.err, ErrAdmissionRefused)
			errs = append(errs, fmt.Sprintf("%s at %v: %v", r.ai.ID, r.ai.Addrs, r.err))
		}
	}
	detail := strings.Join(errs, "; ")
	switch {
	case dup:
		return fmt.Errorf("%w (%s)", ErrDuplicateIdentity, detail)
	case refused:
		return fmt.Errorf("%w: %s", ErrAdmissionRefused, detail)
	default:
		return fmt.Errorf("%w: %s", ErrNoBootstrap, detail)
	}
}

// joinVia tries ai until it admits us, refuses us, or ctx ends. A busy
// bootstrap peer (many joining at once) drops handshakes; those are retried
// with backoff from 100 ms to 2 s.
func (n *Node) joinVia(ctx context.Context, ai peer.AddrInfo) error {
	backoff := 100 * time.Millisecond
	for {
		// Force a fresh dial: the swarm would otherwise answer from the
		// backoff of the failed attempt.
		err := n.connectAndAdmit(network.WithForceDirectDial(ctx, "join retry"), ai)
		if err == nil || errors.Is(err, ErrAdmissionRefused) || errors.Is(err, ErrDuplicateIdentity) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-n.ctx.Done():
			return ErrClosed
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > 2*time.Second {
			backoff = 2 * time.Second
		}
	}
}

func (n *Node) afterJoin() {
	n.beatSoon()
	n.publishSoon()
	// A record put while the routing table is still small lands on whoever
	// was known then; put it again once the table has filled.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		_ = n.dht.Bootstrap(ctx)
		cancel()
		for _, d := range []time.Duration{2 * time.Second, 10 * time.Second} {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(d):
				n.publishSoon()
			}
		}
	}()
}

// connectAndAdmit dials ai and runs admission with it.
func (n *Node) connectAndAdmit(ctx context.Context, ai peer.AddrInfo) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout+admitTimeout)
	defer cancel()
	if err := n.host.Connect(ctx, ai); err != nil {
		return err
	}
	return n.ensureAdmitted(ctx, ai.ID)
}

// ensureAdmitted runs (or waits for) the admission handshake with p as initiator.
func (n *Node) ensureAdmitted(ctx context.Context, p peer.ID) error {
	if n.adm.isAdmitted(p) {
		return nil
	}
	n.mu.Lock()
	a, running := n.inflight[p]
	if !running {
		a = &admission{done: make(chan struct{})}
		n.inflight[p] = a
	}
	n.mu.Unlock()
	if !running {
		go func() {
			a.err = n.initiate(p)
			n.mu.Lock()
			delete(n.inflight, p)
			n.mu.Unlock()
			close(a.done)
		}()
	}
	select {
	case <-a.done:
		if a.err == nil || n.adm.isAdmitted(p) {
			return nil
		}
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *Node) initiate(p peer.ID) error {
	ctx, cancel := context.WithTimeout(n.ctx, admitTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "admission"), p, admitProtocol)
	if err != nil {
		if errors.Is(err, multistream.ErrNotSupported[protocol.ID]{}) {
			err = fmt.Errorf("%w: %s does not speak shoal admission: %v", ErrAdmissionRefused, p, err)
		}
		n.refuse(p, nil, err)
		return err
	}
	defer s.Close()
	hello, err := n.adm.initiate(s)
	if err != nil {
		n.refuse(p, s.Conn(), err)
		return err
	}
	n.adm.count("ok")
	n.adm.admit(p, hello)
	return nil
}

func (n *Node) handleAdmit(s network.Stream) {
	defer s.Close()
	p := s.Conn().RemotePeer()
	hello, err := n.adm.respond(s)
	if err != nil {
		n.refuse(p, s.Conn(), err)
		return
	}
	n.adm.count("ok")
	n.adm.admit(p, hello)
}

// refuse handles a failed handshake: a duplicate of our own identity is fatal
// to us; a peer without the secret is banned and disconnected; a peer that
// presents a live member's identity loses that connection only.
func (n *Node) refuse(p peer.ID, c network.Conn, err error) {
	switch {
	case errors.Is(err, ErrDuplicateIdentity):
		n.adm.count("duplicate_identity")
		n.log.Error("refused by the pool: this node's identity is already live elsewhere; run `shoal reset-identity`", "peer", p)
		select {
		case n.fatal <- err:
		default:
		}
	case errors.Is(err, errCopiedPeer):
		n.adm.count("duplicate_identity")
		if c != nil {
			n.log.Warn("refused a second copy of a member's identity", "peer", p, "addr", c.RemoteMultiaddr())
			_ = c.Close()
		}
		return
	case errors.Is(err, ErrAdmissionRefused):
		n.adm.count(admitResult(err))
		n.log.Warn("refused peer: admission failed", "peer", p, "err", err)
		n.adm.ban(p)
	default:
		// A timeout or a broken stream proves nothing about p (a loaded
		// machine is slow, not hostile): drop the connection, ban nobody,
		// and let the next dial try again.
		n.adm.count(admitResult(err))
		n.log.Debug("admission did not complete", "peer", p, "err", err)
	}
	if c != nil {
		_ = c.Close()
	} else {
		_ = n.host.Network().ClosePeer(p)
	}
}

func admitResult(err error) string {
	switch {
	case errors.Is(err, ErrAdmissionRefused):
		return "bad_proof"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// isDuplicate says whether id, presenting hello, is a second live copy of an
// identity: our own, or a member already admitted or alive with another
// fingerprint.
func (n *Node) isDuplicate(id peer.ID, hello admitHello) bool {
	if id == n.ID() {
		return true
	}
	if prev, ok := n.adm.admittedHello(id); ok && prev.Fingerprint != hello.Fingerprint && n.host.Network().Connectedness(id) == network.Connected {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	st, known := n.members.state(id)
	r := n.members.recordOf(id)
	return known && (st == StateAlive || st == StateSuspect) && r != nil && r.Fingerprint != hello.Fingerprint
}

func (n *Node) onConnected(c network.Conn) {
	p := c.RemotePeer()
	if n.adm.isAdmitted(p) {
		return
	}
	if c.Stat().Direction == network.DirOutbound {
		go func() { _ = n.ensureAdmitted(n.ctx, p) }()
		return
	}
	// Inbound: the dialer runs the handshake; drop the connection if it has
	// not done so in time.
	go func() {
		t := time.NewTimer(2 * admitTimeout)
		defer t.Stop()
		select {
		case <-t.C:
		case <-n.ctx.Done():
			return
		}
		if !n.adm.isAdmitted(p) && c.IsClosed() == false {
			n.adm.count("timeout")
			n.log.Warn("closing connection: no admission", "peer", p)
			_ = c.Close()
		}
	}()
}

func (n *Node) onDisconnected(c network.Conn) {
	p := c.RemotePeer()
	if n.host.Network().Connectedness(p) != network.Connected {
		n.adm.forget(p)
	}
}

func (n *Node) onAdmit(p peer.ID, hello admitHello) {
	n.log.Debug("admitted", "peer", p, "name", hello.Name)
	n.host.ConnManager().TagPeer(p, "shoal-member", 10)
	_, _ = n.dht.RoutingTable().TryAddPeer(p, true, false)
	// No extra heartbeat here: with every member admitting every newcomer,
	// one beat per admission floods the pool with N² heartbeats during a
	// mass join. The newcomer learns of us from the sync below; we learn of
	// it from the record fetched below and from its own heartbeats.
	n.mu.Lock()
	st, known := n.members.state(p)
	n.mu.Unlock()
	go n.fetchRecord(p, p)
	// Push-pull sync (as memberlist does on join) only with a peer that may
	// know members we do not: one we had not met, or one we had lost (a
	// partition healing). Two members that see each other alive already
	// share a view; syncing every pair would move N² records.
	if !known || st != StateAlive {
		go n.syncFrom(p)
	}
}

// antiEntropyInterval is the pause between push-pull syncs with a random
// member, by the node's age. Young nodes sync often: in a mass join the
// bootstrap peer knew only part of the pool when each newcomer synced with
// it, and random pairwise syncs spread the whole view in O(log N) rounds
// instead of waiting for a heartbeat from every member. Older nodes sync
// rarely, to repair what gossip lost.
func antiEntropyInterval(age time.Duration) time.Duration {
	if age < time.Minute {
		return 2 * time.Second
	}
	return 30 * time.Second
}

// syncRandom syncs with one random connected, alive member.
func (n *Node) syncRandom() {
	var cands []peer.ID
	n.mu.Lock()
	for _, m := range n.members.list() {
		if m.State == StateAlive && n.host.Network().Connectedness(m.PeerID) == network.Connected && n.adm.isAdmitted(m.PeerID) {
			cands = append(cands, m.PeerID)
		}
	}
	n.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	go n.syncFrom(cands[mrand.IntN(len(cands))])
}

// syncFrom pulls every live record p holds (push-pull on admission, as
// memberlist does): a newcomer learns the pool at once instead of record by
// record. Each record is verified against the key of the peer it names.
func (n *Node) syncFrom(p peer.ID) {
	ctx, cancel := context.WithTimeout(n.ctx, requestTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, p, syncProtocol)
	if err != nil {
		return
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(requestTimeout))
	r := bufio.NewReader(io.LimitReader(s, maxSyncBytes))
	var got, bad int
	for {
		idb, err := readFrame(r, 128)
		if err != nil {
			break
		}
		raw, err := readFrame(r, maxRecordSize)
		if err != nil {
			break
		}
		id, err := peer.IDFromBytes(idb)
		if err != nil || id == n.ID() {
			continue
		}
		n.mu.Lock()
		same := bytes.Equal(n.members.rawOf(id), raw)
		n.mu.Unlock()
		if same {
			continue // the very record we verified already
		}
		rec, err := VerifyRecord(raw, n.poolID, id, time.Now())
		if err != nil {
			bad++
			n.met.recordsRejected.WithLabelValues(rejectReason(err)).Inc()
			continue
		}
		n.mu.Lock()
		st, known := n.members.state(id)
		// p vouches that id is alive; a member we saw leave stays left.
		_, tr := n.members.record(time.Now(), id, rec, raw, !known || st != StateLeft)
		n.mu.Unlock()
		if tr != nil {
			n.logTransition(*tr)
		}
		got++
	}
	if bad > 0 {
		n.log.Warn("membership sync carried invalid records", "from", p, "rejected", bad)
	}
	n.log.Debug("membership sync", "from", p, "records", got)
}

func (n *Node) handleSync(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(requestTimeout))
	n.mu.Lock()
	out := appendFrame(appendFrame(nil, []byte(n.ID())), n.recordBytes)
	for _, m := range n.members.list() {
		raw := n.members.rawOf(m.PeerID)
		if m.State != StateAlive || raw == nil || len(out) > maxSyncBytes-maxRecordSize {
			continue
		}
		out = append(out, appendFrame(appendFrame(nil, []byte(m.PeerID)), raw)...)
	}
	n.mu.Unlock()
	_, _ = s.Write(out)
}

// relayCandidates feeds AutoRelay with live members, which run relay service
// when they are publicly reachable.
func (n *Node) relayCandidates(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, num)
	go func() {
		defer close(out)
		for _, m := range n.Members() {
			if num == 0 {
				return
			}
			if m.Self || m.State != StateAlive || m.Record == nil {
				continue
			}
			select {
			case out <- peer.AddrInfo{ID: m.PeerID, Addrs: parseAddrs(m.Record.Addrs)}:
				num--
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

type mdnsNotifee struct{ n *Node }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.ID() || m.n.adm.isAdmitted(ai.ID) {
		return
	}
	go func() {
		if err := m.n.connectAndAdmit(m.n.ctx, ai); err == nil {
			m.n.log.Info("found pool member on the LAN", "peer", ai.ID)
		}
	}()
}

// SetInventory replaces the node's inventory. Load (utilisation, free VRAM)
// travels in heartbeats; other changes republish the node record.
func (n *Node) SetInventory(inv hardware.Inventory) {
	n.mu.Lock()
	changed := !bytes.Equal(staticInventory(n.inventory), staticInventory(inv))
	n.inventory = inv
	n.mu.Unlock()
	if changed {
		n.refreshRecord(time.Now())
		n.publishSoon()
		n.beatSoon()
	}
}

// SetModels replaces the models this node announces in its record (the
// complete models of its weight cache), keeping the first MaxRecordModels.
// A change republishes the record.
func (n *Node) SetModels(ms []ModelRef) {
	if len(ms) > MaxRecordModels {
		ms = ms[:MaxRecordModels]
	}
	ms = append([]ModelRef(nil), ms...)
	n.mu.Lock()
	changed := !slices.Equal(n.models, ms)
	n.models = ms
	n.mu.Unlock()
	if changed {
		n.refreshRecord(time.Now())
		n.publishSoon()
		n.beatSoon()
	}
}

// staticInventory encodes the parts of an inventory that change rarely.
func staticInventory(inv hardware.Inventory) []byte {
	inv.MeasuredAt = time.Time{}
	inv.Host.MemoryFreeBytes, inv.Host.DiskFreeBytes = 0, 0
	gpus := make([]hardware.GPU, len(inv.GPUs))
	for i, g := range inv.GPUs {
		g.VRAMFreeBytes, g.UtilizationPct, g.TemperatureC, g.PowerWatts = 0, 0, 0, 0
		gpus[i] = g
	}
	inv.GPUs = gpus
	return mustJSON(inv)
}

func loadOf(inv hardware.Inventory) Load {
	var l Load
	for _, g := range inv.GPUs {
		l.GPUUtilPct = append(l.GPUUtilPct, g.UtilizationPct)
		l.VRAMFreeBytes = append(l.VRAMFreeBytes, g.VRAMFreeBytes)
	}
	return l
}

// refreshRecord signs a new version of the local record.
func (n *Node) refreshRecord(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	seq := uint64(now.UnixNano())
	if n.record != nil && seq <= n.record.Seq {
		seq = n.record.Seq + 1
	}
	var addrs []string
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	r := &Record{
		PeerID: n.ID().String(), Seq: seq, Instance: n.instance, Fingerprint: n.fingerprint,
		Name: n.cfg.Name, Addrs: addrs, Inventory: n.inventory, StartedAt: n.startedAt,
		PublishedAt: now, Version: n.cfg.Version, Models: n.models,
		Free: n.free, Price: n.cfg.Price,
	}
	b, err := SignRecord(n.cfg.Key, n.poolID, r)
	if err != nil {
		n.log.Error("cannot sign node record", "err", err)
		return
	}
	n.record, n.recordBytes = r, b
}

func (n *Node) beatSoon() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *Node) publishSoon() {
	select {
	case n.repub <- struct{}{}:
	default:
	}
}

// heartbeatLoop beats, advances the failure detector and watches addresses.
func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	// Extra beats (a member joined, the record changed) come at most every
	// minGap, so a burst of joins costs one beat, not one per joiner.
	minGap := n.cfg.HeartbeatInterval / 4
	var last time.Time
	var pending <-chan time.Time
	var health localHealth
	lastTick, lost := time.Now(), n.met.gossip.lost.Load()
	nextSync := time.Now().Add(antiEntropyInterval(0))
	for {
		select {
		case <-n.ctx.Done():
			return
		case tickedAt := <-t.C:
			now := time.Now()
			// A tick that waited, or came whole intervals after the last
			// one, or gossip dropped since the last tick: this node is
			// overloaded, so hold off suspecting others.
			iv := n.cfg.HeartbeatInterval
			missed := int(now.Sub(lastTick)/iv) - 1
			if now.Sub(tickedAt) > iv/2 {
				missed = max(missed, 1)
			}
			l := n.met.gossip.lost.Load()
			n.mu.Lock()
			// Heartbeats arriving whole intervals later than usual: they
			// queued on our side (gossip, validation, this lock).
			missed = max(missed, int(n.members.takeLag()/iv))
			score := health.observe(max(missed, 0), l > lost)
			n.members.setHealth(score)
			n.mu.Unlock()
			lastTick, lost = now, l
			n.met.health.Set(float64(score))
			n.tick(now)
			if now.After(nextSync) {
				n.syncRandom()
				nextSync = now.Add(antiEntropyInterval(now.Sub(n.startedAt)))
			}
		case <-n.kick:
			if wait := minGap - time.Since(last); wait > 0 {
				if pending == nil {
					pending = time.After(wait)
				}
				continue
			}
		case <-pending:
			pending = nil
		}
		n.beat(false)
		last = time.Now()
	}
}

func (n *Node) tick(now time.Time) {
	n.mu.Lock()
	trs := n.members.tick(now)
	for p, since := range n.wanted {
		if _, known := n.members.state(p); !known || now.Sub(since) > time.Minute {
			delete(n.wanted, p)
		}
	}
	addrsChanged := n.record != nil && !sameAddrs(n.record.Addrs, n.host.Addrs())
	stale := n.record != nil && now.Sub(n.record.PublishedAt) > RecordRepublish
	counts := map[State]int{}
	for _, m := range n.members.list() {
		counts[m.State]++
	}
	n.mu.Unlock()
	for _, tr := range trs {
		n.logTransition(tr)
		if tr.to == StateSuspect || tr.to == StateDead {
			// Silence while still connected may be a connection that
			// died without a word: check it rather than wait for the
			// muxer's keepalive.
			n.checkSoon(tr.peer)
		}
	}
	for _, s := range []State{StateAlive, StateSuspect, StateDead, StateLeft} {
		n.met.members.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
	if addrsChanged || stale {
		n.refreshRecord(now)
		n.publishSoon()
	}
}

func sameAddrs(have []string, now []multiaddr.Multiaddr) bool {
	if len(have) != len(now) {
		return false
	}
	for i, a := range now {
		if have[i] != a.String() {
			return false
		}
	}
	return true
}

func (n *Node) logTransition(tr transition) {
	to := string(tr.to)
	if to == "" {
		to = "forgotten"
	}
	n.met.transitions.WithLabelValues(to).Inc()
	if tr.to == StateSuspect {
		n.met.suspicions.Add(1)
	}
	switch tr.to {
	case StateAlive:
		n.log.Info("member alive", "peer", tr.peer, "was", tr.from)
	case "":
		n.log.Debug("member forgotten", "peer", tr.peer)
	default:
		n.log.Info("member "+to, "peer", tr.peer, "was", tr.from)
	}
}

func (n *Node) beat(leaving bool) {
	n.mu.Lock()
	n.hbSeq++
	hb := heartbeat{Instance: n.instance, Seq: n.hbSeq, Leaving: leaving || n.leaving, Load: loadOf(n.inventory), SentMs: time.Now().UnixMilli()}
	if n.record != nil {
		hb.RecordSeq = n.record.Seq
	}
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(n.ctx, requestTimeout)
	defer cancel()
	if err := n.topic.Publish(ctx, mustJSON(hb)); err != nil && n.ctx.Err() == nil {
		n.log.Debug("heartbeat not sent", "err", err)
	}
}

// publishLoop puts the local record into the DHT when asked.
func (n *Node) publishLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.repub:
		}
		n.mu.Lock()
		b := n.recordBytes
		n.mu.Unlock()
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		err := n.dht.PutValue(ctx, recordKey(n.ID()), b)
		cancel()
		if err != nil && n.ctx.Err() == nil && n.dht.RoutingTable().Size() > 0 {
			n.log.Debug("record not published to the DHT", "err", err)
		}
	}
}

func (n *Node) validateHeartbeat(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if len(msg.Data) > maxHeartbeatSize {
		n.met.gossipRejected.WithLabelValues("too_large").Inc()
		n.log.Warn("dropped oversized heartbeat", "author", msg.GetFrom(), "via", from, "bytes", len(msg.Data))
		return pubsub.ValidationReject
	}
	var hb heartbeat
	dec := json.NewDecoder(bytes.NewReader(msg.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hb); err != nil || hb.Instance == "" || hb.Seq == 0 {
		n.met.gossipRejected.WithLabelValues("malformed").Inc()
		n.log.Warn("dropped malformed heartbeat", "author", msg.GetFrom(), "via", from)
		return pubsub.ValidationReject
	}
	msg.ValidatorData = hb
	return pubsub.ValidationAccept
}

// readLoop feeds heartbeats into the membership view.
func (n *Node) readLoop() {
	defer n.wg.Done()
	for {
		msg, err := n.sub.Next(n.ctx)
		if err != nil {
			return
		}
		author := msg.GetFrom()
		if author == n.ID() {
			continue
		}
		hb, ok := msg.ValidatorData.(heartbeat)
		if !ok {
			continue
		}
		n.mu.Lock()
		want, tr := n.members.heartbeat(time.Now(), author, hb)
		n.mu.Unlock()
		if tr != nil {
			n.logTransition(*tr)
		}
		if want {
			go n.fetchRecord(author, msg.ReceivedFrom)
		}
	}
}

// fetchRecord gets p's record straight from p when connected (which also
// proves p live), else from via (the member that relayed p's heartbeat;
// records are signed, so any member may relay one), else from the DHT. It
// verifies and stores the record, then connects to p.
func (n *Node) fetchRecord(p, via peer.ID) {
	n.mu.Lock()
	if n.fetching[p] {
		n.mu.Unlock()
		return
	}
	n.fetching[p] = true
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.fetching, p)
		n.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(n.ctx, requestTimeout)
	defer cancel()
	var (
		r    *Record
		raw  []byte
		err  error
		live bool
	)
	for _, from := range []peer.ID{p, via} {
		if r != nil || from == "" || (from == via && via == p) {
			continue
		}
		if n.host.Network().Connectedness(from) == network.Connected && n.adm.isAdmitted(from) {
			r, raw, err = n.fetchFrom(ctx, from, p)
			live = r != nil && from == p
		}
	}
	if r == nil {
		// A DHT lookup is a walk of several hops that verifies every copy
		// it meets; in a mass join every member would make one per
		// newcomer. The next heartbeat's relay or an anti-entropy sync
		// usually brings the record within a second or two, so the DHT is
		// asked only for a record missing longer than dhtFallbackAfter.
		n.mu.Lock()
		since, ok := n.wanted[p]
		if !ok {
			since = time.Now()
			n.wanted[p] = since
		}
		n.mu.Unlock()
		if time.Since(since) < dhtFallbackAfter {
			return
		}
		r, raw, err = n.lookup(ctx, p)
	}
	if err != nil {
		if n.ctx.Err() == nil {
			n.log.Debug("no record for member", "peer", p, "err", err)
		}
		return
	}
	n.mu.Lock()
	delete(n.wanted, p)
	held := n.members.recordOf(p)
	stored, tr := n.members.record(time.Now(), p, r, raw, live)
	connected := 0
	if !stored && held != nil && r.Seq < held.Seq {
		n.met.recordsRejected.WithLabelValues("replayed").Inc()
	}
	n.mu.Unlock()
	if tr != nil {
		n.logTransition(*tr)
	}
	for _, c := range n.host.Network().Peers() {
		if n.adm.isAdmitted(c) {
			connected++
		}
	}
	if n.host.Network().Connectedness(p) != network.Connected && connected < n.cfg.MaxMembersConnected {
		_ = n.connectAndAdmit(n.ctx, peer.AddrInfo{ID: p, Addrs: parseAddrs(r.Addrs)})
	}
}

// fetchFrom asks member from for the record of p (from's own when p == from).
// The request is p's peer ID, length-prefixed; the answer is the signed
// record, or nothing when from holds none.
func (n *Node) fetchFrom(ctx context.Context, from, p peer.ID) (*Record, []byte, error) {
	s, err := n.host.NewStream(ctx, from, recordProtocol)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := s.Write(appendFrame(nil, []byte(p))); err != nil {
		return nil, nil, err
	}
	_ = s.CloseWrite()
	b, err := io.ReadAll(io.LimitReader(s, maxRecordSize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: %s holds no record of %s", ErrNotFound, from, p)
	}
	r, err := VerifyRecord(b, n.poolID, p, time.Now())
	if err != nil {
		n.met.recordsRejected.WithLabelValues(rejectReason(err)).Inc()
		n.log.Warn("rejected node record", "peer", p, "from", from, "err", err)
		return nil, nil, err
	}
	return r, b, nil
}

func (n *Node) handleRecord(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(requestTimeout))
	req, err := readFrame(bufio.NewReader(s), 128)
	if err != nil {
		_ = s.Reset()
		return
	}
	want, err := peer.IDFromBytes(req)
	if err != nil {
		_ = s.Reset()
		return
	}
	n.mu.Lock()
	b := n.recordBytes
	if want != n.ID() {
		b = n.members.rawOf(want)
	}
	n.mu.Unlock()
	_, _ = s.Write(b)
}

func (n *Node) handleLeave(s network.Stream) {
	defer s.Close()
	p := s.Conn().RemotePeer()
	n.mu.Lock()
	tr := n.members.leave(time.Now(), p)
	n.mu.Unlock()
	if tr != nil {
		n.logTransition(*tr)
	}
	_, _ = s.Write([]byte{1})
}

// LookupRecord fetches id's record from the pool's DHT and verifies it.
func (n *Node) LookupRecord(ctx context.Context, id peer.ID) (*Record, error) {
	if id == n.ID() {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.record, nil
	}
	r, _, err := n.lookup(ctx, id)
	return r, err
}

func (n *Node) lookup(ctx context.Context, id peer.ID) (*Record, []byte, error) {
	b, err := n.dht.GetValue(ctx, recordKey(id))
	if err != nil {
		if n.ctx.Err() != nil {
			return nil, nil, ErrClosed
		}
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrNotFound, id, err)
	}
	r, err := VerifyRecord(b, n.poolID, id, time.Now())
	if err != nil {
		n.met.recordsRejected.WithLabelValues(rejectReason(err)).Inc()
		return nil, nil, err
	}
	return r, b, nil
}

// Members is the pool as this node sees it: itself first, then every known
// member by peer ID. Records carry the latest load from heartbeats.
func (n *Node) Members() []Member {
	n.mu.Lock()
	list := n.members.list()
	self := Member{PeerID: n.ID(), State: StateAlive, Self: true, LastSeen: time.Now(), Record: n.record, Load: loadOf(n.inventory)}
	if n.leaving {
		self.State = StateLeft
	}
	n.mu.Unlock()
	out := append([]Member{self}, list...)
	for i := range out {
		out[i].Record = withLoad(out[i].Record, out[i].Load)
	}
	return out
}

// withLoad returns r with per-GPU free VRAM and utilisation from l.
func withLoad(r *Record, l Load) *Record {
	if r == nil || len(l.VRAMFreeBytes) != len(r.Inventory.GPUs) || len(l.GPUUtilPct) != len(r.Inventory.GPUs) {
		return r
	}
	c := *r
	c.Inventory.GPUs = append([]hardware.GPU(nil), r.Inventory.GPUs...)
	for i := range c.Inventory.GPUs {
		c.Inventory.GPUs[i].VRAMFreeBytes = l.VRAMFreeBytes[i]
		c.Inventory.GPUs[i].UtilizationPct = l.GPUUtilPct[i]
	}
	return &c
}

// KnownPeers are the addresses of members worth trying on the next start.
func (n *Node) KnownPeers() []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, m := range n.Members() {
		if m.Self || m.Record == nil || m.State == StateLeft {
			continue
		}
		addrs := parseAddrs(m.Record.Addrs)
		if len(addrs) > 0 {
			out = append(out, peer.AddrInfo{ID: m.PeerID, Addrs: addrs})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Stats are traffic counters, for benchmarks and metrics.
type Stats struct {
	GossipBytesIn, GossipBytesOut int64
	ConnectedMembers              int
	// GossipLost counts gossip dropped on the way (full queues, a slow
	// reader, refused messages); Suspicions counts members turned suspect.
	GossipLost, Suspicions int64
	// DeadConnsClosed counts connections to silent members closed because
	// they did not answer a ping.
	DeadConnsClosed int64
}

// Stats reports gossip traffic so far and connected members.
func (n *Node) Stats() Stats {
	s := Stats{GossipLost: n.met.gossip.lost.Load(), Suspicions: n.met.suspicions.Load(), DeadConnsClosed: n.met.deadConnsClosed.Load()}
	for proto, st := range n.bw.GetBandwidthByProtocol() {
		if strings.HasPrefix(string(proto), "/meshsub/") {
			s.GossipBytesIn += st.TotalIn
			s.GossipBytesOut += st.TotalOut
		}
	}
	for _, p := range n.host.Network().Peers() {
		if n.adm.isAdmitted(p) {
			s.ConnectedMembers++
		}
	}
	return s
}

// Leave says goodbye to the pool (gossip, and directly to connected members,
// waiting up to ctx for their acknowledgements), then closes the node.
func (n *Node) Leave(ctx context.Context) error {
	n.mu.Lock()
	if n.leaving {
		n.mu.Unlock()
		return n.Close()
	}
	n.leaving = true
	n.mu.Unlock()
	n.beat(true)
	var wg sync.WaitGroup
	for _, p := range n.host.Network().Peers() {
		if !n.adm.isAdmitted(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			s, err := n.host.NewStream(ctx, p, leaveProtocol)
			if err != nil {
				return
			}
			defer s.Close()
			_ = s.SetDeadline(time.Now().Add(2 * time.Second))
			_ = s.CloseWrite()
			var ack [1]byte
			_, _ = io.ReadFull(s, ack[:])
		}()
	}
	wg.Wait()
	n.log.Info("left pool", "pool", n.poolID)
	return n.Close()
}

// Close stops the node without a goodbye (members will see it die).
func (n *Node) Close() error {
	var err error
	n.closed.Do(func() {
		n.cancel()
		if n.mdns != nil {
			_ = n.mdns.Close()
		}
		n.sub.Cancel()
		_ = n.dht.Close()
		err = n.host.Close()
		n.wg.Wait()
	})
	return err
}
