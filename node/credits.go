package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// The daemon's side of the market: every meterInterval it reads the
// replicas this node runs into a market.Meter, signs the receipts the Meter
// cuts with the node's key, verifies them into its market.Ledger like any
// other receipt, appends them to ReceiptsFile and pushes them to the
// members. Receipts from members arrive over ReceiptsProtocol and go
// through the same Ledger.Add; every receiptsSyncInterval the node also
// compares ledgers with one random member and pulls what differs, so a
// member that was away catches up.
const (
	// ReceiptsFile keeps every receipt the ledger accepted, append-only;
	// a restarted daemon verifies them all again.
	ReceiptsFile = "receipts.log"
	// meterInterval: how often the metering loop reads the replicas.
	meterInterval = time.Second
	// receiptsSyncInterval: how often the ledger is compared with one
	// random member.
	receiptsSyncInterval = 3 * time.Second
)

// runningReplica is one replica this node runs, as the metering loop sees
// it.
type runningReplica struct {
	ID         string // the replica's runtime ID, unique on this node
	Deployment string
	// Owner is the peer ID of the identity that submitted the deployment
	// ("" for a record written before deployments named their owner).
	Owner string
	GPUs  []market.GPUShare // its reservation's GPU shares
	Ready bool              // serving: the only state that is billed
}

// replicaSource lists the replicas this node runs. Called from the
// metering loop only.
type replicaSource interface {
	replicas() []runningReplica
}

// runnerSource is replicaSource over the replica runner, the ledger its
// reservations live in and the deployment records.
type runnerSource struct {
	runner *replicaRunner
	led    *ledgerServer
	record func(dep string) (coordinator.Record, bool)
}

func (s runnerSource) replicas() []runningReplica {
	runs := s.runner.list()
	if len(runs) == 0 {
		return nil
	}
	claims := map[string]ledger.Claim{}
	for _, r := range s.led.view().Reservations {
		claims[r.ID] = r.Claim
	}
	out := make([]runningReplica, 0, len(runs))
	for _, x := range runs {
		rr := runningReplica{ID: x.ID, Deployment: x.Deployment, Ready: x.State == PhaseReady}
		if rec, ok := s.record(x.Deployment); ok {
			rr.Owner = rec.Spec.Owner
		}
		for _, g := range claims[x.Reservation].GPUs {
			rr.GPUs = append(rr.GPUs, market.GPUShare{UUID: g.UUID, Milli: g.Milli})
		}
		out = append(out, rr)
	}
	return out
}

// metering keeps a market.Meter in line with the replicas that run: Start
// when one becomes ready, Heartbeat while it stays ready, Stop when it is
// not any more, and Tick for the periodic cuts. It does no I/O and reads
// time only through the Meter's clock. Not safe for concurrent use.
type metering struct {
	meter  *market.Meter
	prices market.PriceList
	models map[string]string // GPU UUID → model name, from the inventory
}

// unbilled is a ready replica the meter refused, and why.
type unbilled struct {
	replica string
	err     error
}

// observe brings the meter in line with runs and returns the receipts cut,
// and the ready replicas it could not bill.
func (mt *metering) observe(runs []runningReplica) ([]market.Receipt, []unbilled) {
	var out []market.Receipt
	var refused []unbilled
	metered := map[string]bool{}
	for _, id := range mt.meter.Running() {
		metered[id] = true
	}
	ready := map[string]bool{}
	for _, r := range runs {
		if !r.Ready {
			continue
		}
		ready[r.ID] = true
		if metered[r.ID] {
			rs, err := mt.meter.Heartbeat(r.ID)
			if err != nil {
				refused = append(refused, unbilled{r.ID, err})
			}
			out = append(out, rs...)
			continue
		}
		if err := mt.start(r); err != nil {
			refused = append(refused, unbilled{r.ID, err})
		}
	}
	for id := range metered {
		if ready[id] {
			continue
		}
		rs, err := mt.meter.Stop(id)
		if err != nil {
			refused = append(refused, unbilled{id, err})
		}
		out = append(out, rs...)
	}
	return append(out, mt.meter.Tick()...), refused
}

// start begins metering r at the price this node asks for the model of its
// first GPU.
func (mt *metering) start(r runningReplica) error {
	if r.Owner == "" {
		return fmt.Errorf("%w: deployment %s names no owner to bill", market.ErrInvalidReplica, r.Deployment)
	}
	consumer, err := peer.Decode(r.Owner)
	if err != nil {
		return fmt.Errorf("%w: deployment %s: owner %q: %v", market.ErrInvalidReplica, r.Deployment, r.Owner, err)
	}
	rep := market.Replica{ID: r.ID, Deployment: r.Deployment, Consumer: consumer, GPUs: r.GPUs}
	if len(r.GPUs) > 0 {
		rep.Model = mt.models[r.GPUs[0].UUID]
		if rep.Model == "" {
			rep.Model = "unknown"
		}
		rep.Price = mt.prices.Ask(rep.Model)
	}
	return mt.meter.Start(rep)
}

// flush cuts everything confirmed so far: for a daemon that stops.
func (mt *metering) flush() []market.Receipt { return mt.meter.Flush() }

// modelsOf maps the GPUs of inv to their model names.
func modelsOf(inv hardware.Inventory) map[string]string {
	m := make(map[string]string, len(inv.GPUs))
	for _, g := range inv.GPUs {
		m[g.UUID] = g.Name
	}
	return m
}

// creditsConfig wires a credits service.
type creditsConfig struct {
	Self    peer.ID
	Key     crypto.PrivKey // Self's key: signs the receipts
	Pool    string         // pool ID
	Home    string
	Prices  market.PriceList
	Inv     hardware.Inventory
	Source  replicaSource
	Members Membership // nil: no members (no capacities but its own, no sync)
	Streams streams    // nil: receipts stay on this node
	Clock   Clock      // nil: the system clock
	Log     *slog.Logger
	// Registerer receives shoal_market_*; nil: not exported.
	Registerer prometheus.Registerer
	// Period is the Meter's cut period; zero: market.DefaultPeriod.
	Period time.Duration
}

// credits is the daemon's market: the metering loop, the verified receipt
// ledger with its file, and receipt exchange with the members. It owns one
// loop goroutine and the exchanges it starts; close stops them, then cuts
// and stores the usage confirmed so far.
type credits struct {
	cfg      creditsConfig
	log      *slog.Logger
	rejected *prometheus.CounterVec

	mu   sync.Mutex // guards the fields below
	led  *market.Ledger
	file *receiptFile
	// caps is the GPU count every serving node declared, as last seen in
	// its record (kept after it leaves, so its receipts still count).
	caps    market.CapacityMap
	mt      *metering
	busy    map[peer.ID]bool  // exchanges under way
	refused map[string]string // replicas the meter refused, logged once
	// tally is the ledger added up for fair share, at tallyAt; gen counts
	// additions to the ledger, tallyGen the one tally saw.
	tally         *market.Tally
	tallyAt       time.Time
	gen, tallyGen uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newCredits(cfg creditsConfig) (*credits, error) {
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := cfg.Prices.Validate(); err != nil {
		return nil, fmt.Errorf("node: prices: %w", err)
	}
	c := &credits{
		cfg: cfg, log: cfg.Log.With("component", "credits"),
		caps: market.CapacityMap{}, busy: map[peer.ID]bool{}, refused: map[string]string{},
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_market_receipts_rejected_total",
			Help: "Usage receipts this node's ledger refused, by reason.",
		}, []string{"reason"}),
	}
	var err error
	if c.led, err = market.NewLedger(market.LedgerConfig{Pool: cfg.Pool}); err != nil {
		return nil, fmt.Errorf("node: receipts ledger: %w", err)
	}
	c.caps[cfg.Self] = len(cfg.Inv.GPUs)
	// Every stored receipt is verified again: a file edited while the
	// daemon was down cannot inflate anything.
	now := cfg.Clock.Now()
	loaded, bad := 0, 0
	c.file, err = openReceiptFile(filepath.Join(cfg.Home, ReceiptsFile), func(raw []byte) {
		if _, err := c.led.Add(raw, now); err != nil && !errors.Is(err, market.ErrReplay) {
			bad++
			c.countReject(err)
			return
		}
		loaded++
	}, c.log)
	if err != nil {
		return nil, err
	}
	if loaded+bad > 0 {
		c.log.Info("receipts loaded", "receipts", c.led.Len(), "refused", bad)
	}
	meter, err := market.NewMeter(market.MeterConfig{
		Pool: cfg.Pool, Server: cfg.Self, Period: cfg.Period, NextSeq: c.led.NextSeq(cfg.Self),
	}, cfg.Clock)
	if err != nil {
		c.file.close()
		return nil, fmt.Errorf("node: meter: %w", err)
	}
	c.mt = &metering{meter: meter, prices: cfg.Prices, models: modelsOf(cfg.Inv)}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(c.rejected, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_market_receipts",
			Help: "Usage receipts held in this node's ledger.",
		}, func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return float64(c.led.Len())
		}))
	}
	if cfg.Streams != nil {
		cfg.Streams.Handle(ReceiptsProtocol, c.handleStream)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.loop()
	return c, nil
}

// close stops the loop and the exchanges, then cuts and stores the usage
// of the replicas that run, up to now (the members get it from the next
// start's syncs).
func (c *credits) close() {
	if c == nil {
		return
	}
	c.cancel()
	c.wg.Wait()
	// Confirm what still runs (the runner stops after this), then cut it.
	runs := c.cfg.Source.replicas()
	c.mu.Lock()
	cut, _ := c.mt.observe(runs)
	cut = append(cut, c.mt.flush()...)
	c.mu.Unlock()
	c.commit(cut)
	c.mu.Lock()
	c.file.close()
	c.mu.Unlock()
}

// setInventory follows hardware changes: GPU models for pricing and this
// node's declared GPU count.
func (c *credits) setInventory(inv hardware.Inventory) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mt.models = modelsOf(inv)
	c.caps[c.cfg.Self] = len(inv.GPUs)
}

func (c *credits) loop() {
	defer c.wg.Done()
	meter := c.cfg.Clock.NewTicker(meterInterval)
	defer meter.Stop()
	sync := c.cfg.Clock.NewTicker(receiptsSyncInterval)
	defer sync.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-meter.C():
			c.step()
		case <-sync.C():
			c.syncRandom()
		}
	}
}

// step runs the meter once over what runs now, stores and pushes the
// receipts it cut.
func (c *credits) step() {
	c.updateCaps()
	runs := c.cfg.Source.replicas()
	c.mu.Lock()
	cut, refused := c.mt.observe(runs)
	for id := range c.refused {
		if !slices.ContainsFunc(runs, func(r runningReplica) bool { return r.ID == id }) {
			delete(c.refused, id)
		}
	}
	for _, u := range refused {
		if c.refused[u.replica] != u.err.Error() {
			c.refused[u.replica] = u.err.Error()
			c.log.Warn("replica not metered", "replica", u.replica, "err", u.err)
		}
	}
	c.mu.Unlock()
	if kept := c.commit(cut); len(kept) > 0 {
		c.pushAll(kept)
	}
}

// updateCaps notes the GPU count in every member's record.
func (c *credits) updateCaps() {
	if c.cfg.Members == nil {
		return
	}
	ms := c.cfg.Members.Members()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range ms {
		if m.Record != nil && m.PeerID != c.cfg.Self {
			c.caps[m.PeerID] = len(m.Record.Inventory.GPUs)
		}
	}
}

// commit signs receipts this node cut and adds them like any other.
func (c *credits) commit(cut []market.Receipt) [][]byte {
	if len(cut) == 0 {
		return nil
	}
	raws := make([][]byte, 0, len(cut))
	for _, r := range cut {
		b, err := r.Sign(c.cfg.Key)
		if err != nil {
			c.log.Error("cannot sign a usage receipt; its usage is lost", "replica", r.Replica, "seq", r.Seq, "err", err)
			continue
		}
		raws = append(raws, b)
	}
	return c.add(raws)
}

// add verifies raws into the ledger, appends the ones it kept to the
// file and returns them. Refusals are counted by reason.
func (c *credits) add(raws [][]byte) [][]byte {
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var kept [][]byte
	for _, b := range raws {
		added, err := c.led.Add(b, now)
		if err != nil {
			c.countReject(err)
			c.log.Debug("receipt refused", "err", err)
		}
		if added {
			kept = append(kept, b)
		}
	}
	if len(kept) > 0 {
		c.gen++
	}
	if err := c.file.append(kept); err != nil {
		c.log.Error("cannot store receipts; they stay in memory until the daemon stops", "err", err)
	}
	return kept
}

func (c *credits) countReject(err error) {
	reason := string(market.ReasonOf(err))
	if reason == "" {
		reason = string(market.ReasonMalformed)
	}
	c.rejected.WithLabelValues(reason).Inc()
}

// alivePeers are the other alive members.
func (c *credits) alivePeers() []peer.ID {
	if c.cfg.Members == nil || c.cfg.Streams == nil {
		return nil
	}
	return alivePeers(c.cfg.Members, c.cfg.Self)
}

// pushAll offers receipts just cut to every alive member.
func (c *credits) pushAll(raws [][]byte) {
	for _, p := range c.alivePeers() {
		c.exchangeAsync(p, raws)
	}
}

// syncRandom compares ledgers with one random alive member.
func (c *credits) syncRandom() {
	peers := c.alivePeers()
	if len(peers) == 0 {
		return
	}
	c.exchangeAsync(peers[rand.IntN(len(peers))], nil)
}

// exchangeAsync runs one exchange with p in the background, unless one
// with p is already under way (a push then waits for the next sync).
func (c *credits) exchangeAsync(p peer.ID, push [][]byte) {
	c.mu.Lock()
	if c.busy[p] || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.busy[p] = true
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.busy, p)
			c.mu.Unlock()
		}()
		if err := c.exchange(c.ctx, p, push); err != nil {
			c.log.Debug("receipts not exchanged", "peer", p, "err", err)
		}
	}()
}

// CreditsReport is GET /v1/credits: the ledger as this node computes it
// from the receipts it holds, with this node's identity and prices.
type CreditsReport struct {
	market.Report
	// Self is this node's peer ID.
	Self string `json:"self"`
	// Prices is what this node asks per GPU-hour.
	Prices market.PriceList `json:"prices"`
	// RecentRejections are the last receipts the ledger refused.
	RecentRejections []market.Rejection `json:"recent_rejections,omitempty"`
}

func (c *credits) report() CreditsReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	rep := CreditsReport{Report: c.led.Report(c.caps), Self: c.cfg.Self.String(), Prices: c.cfg.Prices}
	_, rep.RecentRejections = c.led.Rejections()
	return rep
}

// tallyEvery bounds how stale the accounts fair share reads may be when
// no receipt arrived (the serving nodes' GPU counts can change too).
const tallyEvery = 10 * time.Second

// account is id's standing in this node's ledger, for fair share: the
// ledger is added up again only after receipts were added, or after
// tallyEvery.
func (c *credits) account(id peer.ID) market.Account {
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tally == nil || c.tallyGen != c.gen || now.Sub(c.tallyAt) >= tallyEvery {
		c.tally, c.tallyAt, c.tallyGen = c.led.Tally(c.caps), now, c.gen
	}
	return c.tally.Account(id)
}

// orderWaiting is coordinator.FairShare by market.Order: owners are peer
// IDs (Spec.Owner); with accounts nil every owner weighs 1, and an owner
// the ledger does not know weighs 1 too.
func orderWaiting(ws []coordinator.Waiting, held map[string]int64, accounts func(peer.ID) market.Account) []coordinator.Waiting {
	ident := func(owner string) peer.ID {
		if id, err := peer.Decode(owner); err == nil {
			return id
		}
		return peer.ID(owner) // not a peer ID: no account holds it
	}
	in := make([]market.Waiting, len(ws))
	byID := make(map[string]coordinator.Waiting, len(ws))
	for i, w := range ws {
		in[i] = market.Waiting{ID: w.ID, Identity: ident(w.Owner), Milli: w.Milli, Arrival: w.Arrival}
		byID[w.ID] = w
	}
	h := make(map[peer.ID]int64, len(held))
	for owner, milli := range held {
		h[ident(owner)] += milli
	}
	out := make([]coordinator.Waiting, 0, len(ws))
	for _, w := range market.Order(in, accounts, h) {
		out = append(out, byID[w.ID])
	}
	return out
}

// routes serves GET /v1/credits in front of next.
func (c *credits) routes(next http.Handler) http.Handler {
	if c == nil {
		return next
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/credits", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, c.report()) })
	mux.Handle("/", next)
	return mux
}

// startCredits starts the market on the daemon's replicas; a daemon
// without deployments (a test mesh without streams) meters nothing.
func (d *Daemon) startCredits(home string, log *slog.Logger, m meshNode, key crypto.PrivKey, dep *deployService, parts *servingParts, inv hardware.Inventory, reg prometheus.Registerer) (*credits, error) {
	if dep == nil || parts == nil {
		return nil, nil
	}
	c, err := newCredits(creditsConfig{
		Self: m.ID(), Key: key, Pool: m.PoolID(), Home: home, Prices: d.cfg.Prices, Inv: inv,
		Source:  runnerSource{runner: parts.runner, led: dep.led, record: dep.record},
		Members: m, Streams: dep.cfg.Streams, Clock: d.cfg.Clock, Log: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	dep.setAccounts(c.account) // fair share weighs owners by this ledger
	return c, nil
}

// meshPrice is a price list as the node record announces it, in credits
// per GPU-hour.
func meshPrice(p market.PriceList) mesh.Price {
	out := mesh.Price{PerGPUHour: p.Default.Credits()}
	if len(p.Models) > 0 {
		out.Models = make(map[string]float64, len(p.Models))
		for m, v := range p.Models {
			out.Models[m] = v.Credits()
		}
	}
	return out
}
