package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/node"
)

func TestCreditsTable(t *testing.T) {
	a, err := peer.Decode("12D3KooWSwawbzvCmWYL9oVxsoBQ7ZwYvqH1ikgsBvD8GZgQkhPD")
	if err != nil {
		t.Fatal(err)
	}
	r := node.CreditsReport{
		Report: market.Report{
			Root: "0123456789abcdef", Receipts: 3, Accepted: 3, Rejected: 2,
			RejectedByReason: map[market.Reason]int{market.ReasonSignature: 1, market.ReasonAmount: 1},
			Identities: []market.IdentityReport{{
				Peer: a, Balance: 50_000, Earned: 50_000, ServedGPUSeconds: 5, Weight: 1,
			}},
		},
		Self:   a.String(),
		Prices: market.PriceList{Models: map[string]market.Micro{"RTX 4090": 36 * market.Credit}},
	}
	var b bytes.Buffer
	if err := writeCredits(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Ledger 0123456789ab: 3 receipts, 3 counted, 2 refused.",
		"12D3KooWSwaw *", "0.050000", "5.0",
		"Refused: amount does not match usage 1, bad signature 1.",
		"This node asks 36.000000 for RTX 4090 per GPU-hour.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("credits table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestPriceFlag(t *testing.T) {
	code, _, stderr := shoal(t, "--home", t.TempDir(), "up", "--price", "RTX 4090=-1")
	if code != exitUsage || !strings.Contains(stderr, `--price "RTX 4090=-1"`) {
		t.Errorf("up --price RTX 4090=-1: exit %d, stderr %q; want a usage error naming the flag", code, stderr)
	}
}
