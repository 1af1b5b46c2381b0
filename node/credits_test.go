package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// stepClock is a Clock the test steps; its tickers never fire, so the
// credits loop stays idle and the test calls step itself.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func newStepClock() *stepClock {
	return &stepClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *stepClock) NewTicker(time.Duration) Ticker {
	return &fakeTicker{c: make(chan time.Time)}
}

// fixedSource is a replicaSource the test sets.
type fixedSource struct {
	mu   sync.Mutex
	runs []runningReplica
}

func (s *fixedSource) set(runs ...runningReplica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runs = runs
}

func (s *fixedSource) replicas() []runningReplica {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]runningReplica(nil), s.runs...)
}

func testKey(t testing.TB, seed byte) (crypto.PrivKey, peer.ID) {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, id
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// The metering loop's core over a stepped clock: a replica is billed from
// the moment it is ready, cut every period, and once more when it stops;
// one that is not ready, or whose deployment names no owner, is not.
func TestMeteringObserve(t *testing.T) {
	clock := newStepClock()
	_, server := testKey(t, 1)
	_, consumer := testKey(t, 2)
	meter, err := market.NewMeter(market.MeterConfig{Pool: "pool", Server: server, Period: 10 * time.Second}, clock)
	if err != nil {
		t.Fatal(err)
	}
	mt := &metering{
		meter:  meter,
		prices: market.PriceList{Default: market.Credit, Models: map[string]market.Micro{"RTX 4090": 36 * market.Credit}},
		models: map[string]string{"GPU-a": "RTX 4090", "GPU-b": "A10"},
	}
	start := clock.Now()
	half := runningReplica{ID: "r1", Deployment: "d", Owner: consumer.String(), GPUs: []market.GPUShare{{UUID: "GPU-a", Milli: 500}}, Ready: true}
	whole := runningReplica{ID: "r2", Deployment: "d", Owner: consumer.String(), GPUs: []market.GPUShare{{UUID: "GPU-b", Milli: 1000}}}
	orphan := runningReplica{ID: "r3", Deployment: "old", GPUs: []market.GPUShare{{UUID: "GPU-b", Milli: 100}}, Ready: true}

	type want struct {
		replica  string
		from, to time.Duration // after start
		price    market.Micro
		seq      uint64
	}
	check := func(step string, got []market.Receipt, wants ...want) {
		t.Helper()
		if len(got) != len(wants) {
			t.Fatalf("%s: %d receipts %+v; want %d", step, len(got), got, len(wants))
		}
		for i, w := range wants {
			r := got[i]
			if r.Replica != w.replica || !r.Start.Equal(start.Add(w.from)) || !r.End.Equal(start.Add(w.to)) ||
				r.Price != w.price || r.Seq != w.seq || r.Consumer != consumer || r.Server != server {
				t.Errorf("%s: receipt %d = %s %v..%v at %v seq %d; want %s %v..%v at %v seq %d", step, i,
					r.Replica, r.Start.Sub(start), r.End.Sub(start), r.Price, r.Seq, w.replica, w.from, w.to, w.price, w.seq)
			}
			if err := r.Check(market.DefaultMaxSpan); err != nil {
				t.Errorf("%s: receipt %d does not check: %v", step, i, err)
			}
		}
	}

	got, refused := mt.observe([]runningReplica{half, whole, orphan})
	check("start", got)
	if len(refused) != 1 || refused[0].replica != "r3" || !errors.Is(refused[0].err, market.ErrInvalidReplica) {
		t.Errorf("refused = %+v; want r3 with ErrInvalidReplica (no owner)", refused)
	}
	if ids := meter.Running(); len(ids) != 1 || ids[0] != "r1" {
		t.Fatalf("metered %v after the first look; want [r1] (r2 is not ready)", ids)
	}
	clock.Advance(5 * time.Second)
	got, _ = mt.observe([]runningReplica{half, whole})
	check("5 s", got)

	whole.Ready = true
	clock.Advance(5 * time.Second)
	got, _ = mt.observe([]runningReplica{half, whole})
	check("10 s: a period", got, want{"r1", 0, 10 * time.Second, 36 * market.Credit, 1})
	if got[0].Amount != market.Credit/20 { // 36/h × 0.5 GPU × 10 s
		t.Errorf("amount %v; want 0.05", got[0].Amount)
	}

	clock.Advance(3 * time.Second)
	got, _ = mt.observe([]runningReplica{whole}) // r1 ended
	check("13 s: r1 stopped", got, want{"r1", 10 * time.Second, 13 * time.Second, 36 * market.Credit, 2})

	clock.Advance(2 * time.Second)
	whole.Ready = false // crashed: backoff
	got, _ = mt.observe([]runningReplica{whole})
	check("15 s: r2 not ready", got, want{"r2", 10 * time.Second, 15 * time.Second, market.Credit, 3})
	if n := len(meter.Running()); n != 0 {
		t.Errorf("%d replicas metered at the end; want 0", n)
	}
}

func newTestCredits(t *testing.T, home string, clock Clock, key crypto.PrivKey, src replicaSource) *credits {
	t.Helper()
	id, _ := peer.IDFromPrivateKey(key)
	c, err := newCredits(creditsConfig{
		Self: id, Key: key, Pool: "pool", Home: home,
		Prices: market.PriceList{Default: 36 * market.Credit},
		Inv:    hardware.Inventory{GPUs: []hardware.GPU{{UUID: "GPU-a", Name: "RTX 4090"}}},
		Source: src, Clock: clock, Log: quiet, Period: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Receipts a node cuts are stored as they are cut; a restart verifies
// them again, loses none, resumes the sequence, and refuses a receipt
// tampered with on disk; a torn tail is cut off.
func TestCreditsStoreAndReload(t *testing.T) {
	home := t.TempDir()
	clock := newStepClock()
	key, self := testKey(t, 1)
	_, consumer := testKey(t, 2)
	src := &fixedSource{}
	src.set(runningReplica{ID: "r1", Deployment: "d", Owner: consumer.String(), GPUs: []market.GPUShare{{UUID: "GPU-a", Milli: 1000}}, Ready: true})

	c := newTestCredits(t, home, clock, key, src)
	c.step()
	clock.Advance(10 * time.Second)
	c.step() // a period: receipt 1
	clock.Advance(4 * time.Second)
	c.close() // flush: receipt 2
	path := filepath.Join(home, ReceiptsFile)
	var raws [][]byte
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readReceipts(bufio.NewReader(f), func(b []byte) { raws = append(raws, b) }); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if len(raws) != 2 {
		t.Fatalf("%s holds %d receipts; want 2", ReceiptsFile, len(raws))
	}

	c = newTestCredits(t, home, clock, key, src)
	rep := c.report()
	if rep.Receipts != 2 || rep.Accepted != 2 {
		t.Errorf("after restart: %d receipts, %d counted; want 2 and 2", rep.Receipts, rep.Accepted)
	}
	want := 14 * market.Credit / 100 // 36/h × 14 GPU-s
	if srv, con := identity(rep, self), identity(rep, consumer); srv.Earned != want || con.Spent != want || srv.ServedGPUSeconds != 14 || con.ConsumedGPUSeconds != 14 {
		t.Errorf("after restart: server %+v, consumer %+v; want %v earned and spent for 14 GPU-s", srv, con, want)
	}
	if got := c.mt.meter.NextSeq(); got != 3 {
		t.Errorf("meter resumes at sequence %d; want 3", got)
	}
	c.close()

	// A byte flipped in a copy of receipt 1's signature, appended, and a
	// torn record after it.
	bad := bytes.Clone(raws[0])
	bad[len(bad)-1] ^= 1
	var tail []byte
	tail = binary.AppendUvarint(tail, uint64(len(bad)))
	tail = append(tail, bad...)
	tail = binary.AppendUvarint(tail, 300)
	tail = append(tail, 1, 2, 3)
	fa, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := fa.Seek(0, io.SeekEnd)
	fa.Write(tail)
	fa.Close()
	c = newTestCredits(t, home, clock, key, src)
	defer c.close()
	rep = c.report()
	if rep.Receipts != 2 || rep.RejectedByReason[market.ReasonSignature] != 1 {
		t.Errorf("after tampering: %d receipts, refused %v; want 2 and one bad signature", rep.Receipts, rep.RejectedByReason)
	}
	if st, _ := os.Stat(path); st.Size() != before+int64(uvarintLen(uint64(len(bad))))+int64(len(bad)) {
		t.Errorf("file is %d bytes; want the torn record cut off (%d)", st.Size(), before+int64(uvarintLen(uint64(len(bad))))+int64(len(bad)))
	}
}

func identity(r CreditsReport, id peer.ID) market.IdentityReport {
	for _, x := range r.Identities {
		if x.Peer == id {
			return x
		}
	}
	return market.IdentityReport{Peer: id}
}

func TestDecodeReceiptsMsgBounds(t *testing.T) {
	_, a := testKey(t, 1)
	ok := func(m receiptsMsg) []byte {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"empty object", []byte(`{}`), true},
		{"a head and a receipt", ok(receiptsMsg{Heads: []market.ServerHead{{Server: a, Receipts: 1, MaxSeq: 1}}, Receipts: [][]byte{{1, 2}}}), true},
		{"not JSON", []byte(`{"heads":`), false},
		{"unknown field", []byte(`{"more":1}`), false},
		{"trailing", []byte(`{} {}`), false},
		{"bad peer ID", []byte(`{"heads":[{"server":"nope"}]}`), false},
		{"head twice", ok(receiptsMsg{Heads: []market.ServerHead{{Server: a}, {Server: a}}}), false},
		{"empty receipt", []byte(`{"receipts":[""]}`), false},
		{"oversized receipt", ok(receiptsMsg{Receipts: [][]byte{make([]byte, market.MaxReceiptSize+1)}}), false},
		{"too many receipts", ok(receiptsMsg{Receipts: bytes.Fields(bytes.Repeat([]byte("x "), maxExchangeReceipts+1))}), false},
	} {
		_, err := decodeReceiptsMsg(tc.b)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrBadReceipts) {
			t.Errorf("%s: decodeReceiptsMsg = %v; want ok %v (else ErrBadReceipts)", tc.name, err, tc.ok)
		}
	}
}

func FuzzDecodeReceiptsMsg(f *testing.F) {
	key, id := testKey(f, 1)
	_, con := testKey(f, 2)
	r := market.Receipt{
		Pool: "pool", Server: id, Consumer: con, Deployment: "d", Replica: "r", Model: "RTX 4090",
		GPUs: []market.GPUShare{{UUID: "GPU-a", Milli: 500}}, Start: time.UnixMilli(1_700_000_000_000), Seq: 1,
	}
	r.End = r.Start.Add(time.Minute)
	raw, err := r.Sign(key)
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := json.Marshal(receiptsMsg{Heads: []market.ServerHead{{Server: id, Receipts: 1, MaxSeq: 1, Digest: "ab"}}, Receipts: [][]byte{raw}})
	f.Add(seed)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"receipts":["AQ=="]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeReceiptsMsg(b)
		if err != nil {
			if !errors.Is(err, ErrBadReceipts) {
				t.Fatalf("error %v does not wrap ErrBadReceipts", err)
			}
			return
		}
		if len(m.Heads) > maxHeads || len(m.Receipts) > maxExchangeReceipts {
			t.Fatalf("accepted %d heads and %d receipts", len(m.Heads), len(m.Receipts))
		}
		// Whatever the frame says, a ledger verifies each receipt.
		l, _ := market.NewLedger(market.LedgerConfig{Pool: "pool"})
		for _, x := range m.Receipts {
			if len(x) == 0 || len(x) > market.MaxReceiptSize {
				t.Fatalf("accepted a receipt of %d bytes", len(x))
			}
			if _, err := l.Add(x, r.End); err != nil && market.ReasonOf(err) == "" {
				t.Fatalf("ledger error without a reason: %v", err)
			}
		}
	})
}

// Two real members on loopback: a receipt cut on A reaches B by A's push
// and both ledgers agree; a receipt with one byte flipped, pushed by B
// over the protocol, is refused by A, counted, and not stored.
func TestReceiptsExchangeOverMesh(t *testing.T) {
	pool, err := mesh.NewPool()
	if err != nil {
		t.Fatal(err)
	}
	ca := meshtest.Config(t, pool, "a")
	ma := meshtest.Start(t, ca)
	tok, err := mesh.ParseToken(ma.Token())
	if err != nil {
		t.Fatal(err)
	}
	cb := meshtest.Config(t, tok, "b")
	mb := meshtest.Start(t, cb)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := mb.Join(ctx); err != nil {
		t.Fatal(err)
	}
	both := []*mesh.Node{ma, mb}
	if !meshtest.Eventually(20*time.Second, func() bool {
		return meshtest.Sees(ma, both, mesh.StateAlive) && meshtest.Sees(mb, both, mesh.StateAlive)
	}) {
		t.Fatal("members do not see each other")
	}
	clock := newStepClock()
	regA := prometheus.NewRegistry()
	start := func(m *mesh.Node, key crypto.PrivKey, src replicaSource, reg prometheus.Registerer) *credits {
		c, err := newCredits(creditsConfig{
			Registerer: reg,
			Self:       m.ID(), Key: key, Pool: m.PoolID(), Home: t.TempDir(),
			Prices: market.PriceList{Default: 36 * market.Credit},
			Inv:    meshtest.Inventory("GPU-"+m.ID().String(), 24),
			Source: src, Members: m, Streams: m, Clock: clock, Log: quiet, Period: 10 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.close)
		return c
	}
	src := &fixedSource{}
	src.set(runningReplica{ID: "r1", Deployment: "d", Owner: mb.ID().String(), GPUs: []market.GPUShare{{UUID: "declared-GPU-a", Milli: 1000}}, Ready: true})
	a, b := start(ma, ca.Key, src, regA), start(mb, cb.Key, &fixedSource{}, nil)

	a.step()
	clock.Advance(10 * time.Second)
	a.step() // cuts receipt 1 and pushes it to B
	if !meshtest.Eventually(10*time.Second, func() bool { return b.report().Root == a.report().Root && b.report().Receipts == 1 }) {
		t.Fatalf("B's ledger %+v never matched A's %+v", b.report(), a.report())
	}
	b.updateCaps()
	ra, rb := a.report(), b.report()
	if identity(rb, ma.ID()).Earned != market.Credit/10 || identity(rb, mb.ID()).Spent != market.Credit/10 || rb.Accepted != 1 {
		t.Errorf("B's report %+v; want A earning and B spending 0.1 for 10 GPU-s", rb)
	}
	if identity(ra, ma.ID()) != identity(rb, ma.ID()) {
		t.Errorf("A sees itself as %+v, B sees A as %+v; want the same", identity(ra, ma.ID()), identity(rb, ma.ID()))
	}

	// B pushes a tampered copy of A's receipt to A.
	raw := a.led.ReceiptsOf(ma.ID(), 0, 0)[0]
	bad := bytes.Clone(raw)
	bad[len(bad)-5] ^= 0x10
	if err := b.exchange(ctx, ma.ID(), [][]byte{bad}); err != nil {
		t.Fatal(err)
	}
	ra = a.report()
	if ra.RejectedByReason[market.ReasonSignature] != 1 || ra.Receipts != 1 {
		t.Errorf("after a tampered push A holds %d receipts, refused %v; want 1 and one bad signature", ra.Receipts, ra.RejectedByReason)
	}
	if got := rejectedMetric(t, regA, market.ReasonSignature); got != 1 {
		t.Errorf("shoal_market_receipts_rejected_total{reason=%q} = %v; want 1", market.ReasonSignature, got)
	}
}

func TestBoundedPush(t *testing.T) {
	small := make([][]byte, maxExchangeReceipts+5)
	for i := range small {
		small[i] = make([]byte, 10)
	}
	large := [][]byte{make([]byte, maxExchangeBytes/2+1), make([]byte, maxExchangeBytes/2+1), {1}}
	for _, tc := range []struct {
		name string
		in   [][]byte
		want int
	}{
		{"none", nil, 0}, {"many small", small, maxExchangeReceipts}, {"two halves and a byte", large, 1}, {"a few", small[:3], 3},
	} {
		if got := len(bounded(tc.in)); got != tc.want {
			t.Errorf("bounded(%s) keeps %d; want %d", tc.name, got, tc.want)
		}
	}
}

// rejectedMetric is shoal_market_receipts_rejected_total{reason} in reg.
func rejectedMetric(t *testing.T, reg prometheus.Gatherer, reason market.Reason) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_market_receipts_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == string(reason) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
