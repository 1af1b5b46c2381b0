package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/node"
)

func (a *app) creditsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "credits",
		Short: "Show the pool's credit ledger: who earned and spent what for GPU time",
		Long: `Show the ledger of usage receipts as this node computes it. Every node that
serves a replica signs receipts for the GPU time it served (every minute, and
when the replica stops), at the price it asks (shoal up|join --price); the
identity that deployed pays. Members exchange receipts and each verifies every
one, so nodes that hold the same receipts (same ROOT) show the same balances.

Columns: PEER (first 12 characters of the peer ID; * marks this node),
BALANCE (earned minus spent), EARNED (by serving), SPENT (by deploying), in
credits; SERVED and CONSUMED GPU time in GPU-seconds (serving oneself not
counted); WEIGHT, the fair-share weight under contention. Receipts refused
(bad signature, replayed, inflated, ...) are counted by reason, never in a
balance.

-o json prints the report the control API returns (GET /v1/credits); amounts
there are integers in micro-credits.`,
		Example: `  shoal credits
  shoal credits -o json | jq '.identities[] | {peer, balance_micro}'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.jsonOrTable(cmd.Context(), c, "/v1/credits", func() error {
				r, err := c.Credits(cmd.Context())
				if err != nil {
					return err
				}
				return writeCredits(a.stdout, r)
			})
		},
	}
}

func writeCredits(w io.Writer, r node.CreditsReport) error {
	fmt.Fprintf(w, "Ledger %s: %d receipts, %d counted, %d refused.\n", shortPeer(r.Root), r.Receipts, r.Accepted, r.Rejected)
	tw := newTable(w)
	fmt.Fprintln(tw, "PEER\tBALANCE\tEARNED\tSPENT\tSERVED GPU-S\tCONSUMED GPU-S\tWEIGHT")
	for _, id := range r.Identities {
		p := shortPeer(id.Peer.String())
		if id.Peer.String() == r.Self {
			p += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.2f\n", p, id.Balance, id.Earned, id.Spent,
			id.ServedGPUSeconds, id.ConsumedGPUSeconds, id.Weight)
	}
	if len(r.Identities) == 0 {
		fmt.Fprintln(tw, "-\t-\t-\t-\t-\t-\t-")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.RejectedByReason) > 0 {
		reasons := make([]string, 0, len(r.RejectedByReason))
		for reason, n := range r.RejectedByReason {
			reasons = append(reasons, fmt.Sprintf("%s %d", reason, n))
		}
		slices.Sort(reasons)
		fmt.Fprintf(w, "Refused: %s.\n", strings.Join(reasons, ", "))
	}
	if asks := prices(r.Prices); asks != "" {
		fmt.Fprintf(w, "This node asks %s per GPU-hour.\n", asks)
	}
	return nil
}

// prices describes a price list ("" when it asks nothing).
func prices(p market.PriceList) string {
	var parts []string
	models := make([]string, 0, len(p.Models))
	for m := range p.Models {
		models = append(models, m)
	}
	slices.Sort(models)
	for _, m := range models {
		parts = append(parts, fmt.Sprintf("%s for %s", p.Models[m], m))
	}
	if p.Default != 0 {
		parts = append(parts, fmt.Sprintf("%s for any other GPU", p.Default))
	}
	return strings.Join(parts, ", ")
}
