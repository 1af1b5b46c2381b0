package market

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testPool = "pool-test"

// t0 is the start of every test's time.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a Clock the test steps.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// ident is a deterministic node identity.
type ident struct {
	key crypto.PrivKey
	id  peer.ID
}

func newIdent(tb testing.TB, seed byte) ident {
	tb.Helper()
	key, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		tb.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return ident{key, id}
}

// receipt is a valid receipt of server for consumer: one GPU at 500 milli
// for a minute from start, at 2 credits per GPU-hour.
func receipt(server, consumer ident, seq uint64, start time.Time) Receipt {
	r := Receipt{
		Pool: testPool, Server: server.id, Consumer: consumer.id,
		Deployment: "dep-1", Replica: "r-0", Model: "RTX 4090",
		GPUs:  []GPUShare{{UUID: "GPU-0", Milli: 500}},
		Start: start, End: start.Add(time.Minute),
		Price: 2 * Credit, Seq: seq,
	}
	r.fixAmount()
	return r
}

// fixAmount sets Amount to what the usage costs.
func (r *Receipt) fixAmount() {
	r.Amount, _ = Cost(r.Price, r.Usage())
}

func mustSign(tb testing.TB, r Receipt, key crypto.PrivKey) []byte {
	tb.Helper()
	b, err := r.Sign(key)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return b
}

func newTestLedger(tb testing.TB) *Ledger {
	tb.Helper()
	l, err := NewLedger(LedgerConfig{Pool: testPool})
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// signRaw signs r as is, without Sign's checks: how a cheating node would.
func signRaw(tb testing.TB, r Receipt, key crypto.PrivKey) []byte {
	tb.Helper()
	body := r.appendBody(nil)
	sig, err := key.Sign(signingBytes(body))
	if err != nil {
		tb.Fatal(err)
	}
	return append(binary.AppendUvarint(body, uint64(len(sig))), sig...)
}
