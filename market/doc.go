// Package market owns what GPU time costs and who owes whom: the prices
// nodes ask, the limits deployments set, metering of running replicas into
// usage receipts signed by the node that served them, a ledger of balances
// that any member recomputes and verifies from those receipts, and the
// fair-share weight that favours identities that contributed more.
//
//	Meter (per node) ──Receipt──▶ Sign (node key) ──bytes──▶ gossip / sync
//	                                                            │
//	             Ledger.Add: size, encoding, pool, shares, amount, clock, signature
//	                                                            │
//	             Ledger (one receipt per serving node and sequence number)
//	                 ├─ Tally(caps): overlap and capacity in canonical order → Accounts
//	                 ├─ Snapshot: per-node digests and a root to compare ledgers cheaply
//	                 └─ Report: the JSON of GET /v1/credits
//	Accounts ──Weight──▶ Order(waiting requests) under contention
//
// Money is integer: prices and amounts are Micro (millionths of a credit),
// GPU time is GPUTime (milli-GPU-milliseconds), so every node adds the same
// receipts to the same balances. Usage is never read from the wire: a
// receipt's amount must equal its price times the GPU time recomputed from
// its interval and GPU shares.
//
// Price 0 is the default: a PriceList's zero value asks nothing and Fits
// never refuses a node when the deployment sets no limit, so a private pool
// runs free and the market never blocks placement. Fair share only orders
// requests that contend; in a free pool without receipts every identity
// weighs 1.
//
// The package does no I/O, starts no goroutines and reads no clock of its
// own: the Meter takes a Clock, the Ledger takes now as an argument, and
// Tally, Weight and Order are pure. The daemon (package node) wires them:
// it feeds the Meter from the runtime, signs and stores receipts, exchanges
// them with peers and serves the Report.
package market
