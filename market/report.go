package market

import "github.com/libp2p/go-libp2p/core/peer"

// Report is what the control API returns for GET /v1/credits and what
// `shoal credits` prints: the ledger as this node computes it.
type Report struct {
	Pool string `json:"pool"`
	// Root is the Snapshot root: two nodes with equal roots hold the same
	// receipts.
	Root string `json:"root"`
	// Receipts held, Accepted of them counted.
	Receipts int `json:"receipts"`
	Accepted int `json:"accepted"`
	// Rejected counts receipts refused at intake plus receipts held but not
	// counted; RejectedByReason splits it.
	Rejected         int            `json:"rejected"`
	RejectedByReason map[Reason]int `json:"rejected_by_reason"`
	// Identities, sorted by peer ID.
	Identities []IdentityReport `json:"identities"`
}

// IdentityReport is one identity's line of a Report. Amounts are integers
// in micro-credits; GPU-hours are for display.
type IdentityReport struct {
	Peer             peer.ID `json:"peer"`
	Balance          Micro   `json:"balance_micro"`
	Earned           Micro   `json:"earned_micro"`
	Spent            Micro   `json:"spent_micro"`
	ServedGPUHours   float64 `json:"served_gpu_hours"`
	ConsumedGPUHours float64 `json:"consumed_gpu_hours"`
	// ServedGPUSeconds and ConsumedGPUSeconds are the same GPU time in
	// GPU-seconds, for short runs.
	ServedGPUSeconds   float64 `json:"served_gpu_seconds"`
	ConsumedGPUSeconds float64 `json:"consumed_gpu_seconds"`
	Weight             float64 `json:"weight"` // fair-share weight (Weight)
}

// Report tallies the ledger under caps into a Report.
func (l *Ledger) Report(caps Capacities) Report {
	t := l.Tally(caps)
	snap := l.Snapshot()
	counts, _ := l.Rejections()
	for _, rj := range t.Rejected {
		counts[rj.Reason]++
	}
	rep := Report{
		Pool: snap.Pool, Root: snap.Root, Receipts: snap.Receipts, Accepted: t.Accepted,
		RejectedByReason: counts, Identities: make([]IdentityReport, 0, len(t.Accounts)),
	}
	for _, n := range counts {
		rep.Rejected += n
	}
	for _, a := range t.Accounts {
		rep.Identities = append(rep.Identities, IdentityReport{
			Peer: a.Peer, Balance: a.Balance(), Earned: a.Earned, Spent: a.Spent,
			ServedGPUHours: a.Served.Hours(), ConsumedGPUHours: a.Consumed.Hours(),
			ServedGPUSeconds: a.Served.Seconds(), ConsumedGPUSeconds: a.Consumed.Seconds(), Weight: Weight(a),
		})
	}
	return rep
}
