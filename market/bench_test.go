package market

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkVerifyReceipt is decode plus ed25519 verification of one
// receipt: what admitting a receipt from a peer costs. Run with -cpu 1.
func BenchmarkVerifyReceipt(b *testing.B) {
	srv, con := newIdent(b, 1), newIdent(b, 2)
	raw := mustSign(b, receipt(srv, con, 1, t0), srv.key)
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Verify(raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "receipts/s")
}

// BenchmarkLedgerAdd admits distinct receipts into a ledger: every check
// Add makes, signature included.
func BenchmarkLedgerAdd(b *testing.B) {
	srv, con := newIdent(b, 1), newIdent(b, 2)
	const n = 4096
	raws := make([][]byte, n)
	for i := range raws {
		raws[i] = mustSign(b, receipt(srv, con, uint64(i+1), t0.Add(time.Duration(i)*time.Minute)), srv.key)
	}
	now := t0.Add(n * time.Minute)
	b.ResetTimer()
	var l *Ledger
	i := 0
	for b.Loop() {
		if i%n == 0 {
			l = newTestLedger(b)
		}
		if _, err := l.Add(raws[i%n], now); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "receipts/s")
}

// BenchmarkTally recomputes balances from verified receipts: a day of
// one-minute receipts from 8 replicas on 4 nodes.
func BenchmarkTally(b *testing.B) {
	con := newIdent(b, 99)
	l := newTestLedger(b)
	caps := CapacityMap{}
	for s := range 4 {
		srv := newIdent(b, byte(s+1))
		caps[srv.id] = 2
		seq := uint64(1)
		for rep := range 2 {
			for m := range 1440 {
				r := receipt(srv, con, seq, t0.Add(time.Duration(m)*time.Minute))
				r.Replica = fmt.Sprint("r-", rep)
				r.GPUs[0].UUID = fmt.Sprint("GPU-", rep)
				seq++
				if _, err := l.Add(mustSign(b, r, srv.key), t0.Add(48*time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if tal := l.Tally(caps); tal.Accepted != l.Len() {
			b.Fatalf("accepted %d of %d", tal.Accepted, l.Len())
		}
	}
	b.ReportMetric(float64(l.Len())*float64(b.N)/b.Elapsed().Seconds(), "receipts/s")
}
