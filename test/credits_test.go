package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// creditsReport is the part of `shoal credits -o json` the test reads.
type creditsReport struct {
	Self             string         `json:"self"`
	Root             string         `json:"root"`
	Receipts         int            `json:"receipts"`
	Accepted         int            `json:"accepted"`
	RejectedByReason map[string]int `json:"rejected_by_reason"`
	Identities       []struct {
		Peer               string  `json:"peer"`
		Balance            int64   `json:"balance_micro"`
		Earned             int64   `json:"earned_micro"`
		Spent              int64   `json:"spent_micro"`
		ServedGPUSeconds   float64 `json:"served_gpu_seconds"`
		ConsumedGPUSeconds float64 `json:"consumed_gpu_seconds"`
	} `json:"identities"`
}

func (n *Node) credits() creditsReport {
	var r creditsReport
	n.JSON(&r, "credits")
	return r
}

// account is peer's line of r (zero when absent).
func (r creditsReport) account(peer string) (earned, spent int64, served, consumed float64) {
	for _, id := range r.Identities {
		if id.Peer == peer {
			return id.Earned, id.Spent, id.ServedGPUSeconds, id.ConsumedGPUSeconds
		}
	}
	return 0, 0, 0, 0
}

// The scenario: three real nodes; A has the GPU and asks 36
// credits per GPU-hour for it; C deploys the reference workload, A serves
// it for a few seconds, then C removes it. Every node ends up with the same
// receipts (same root), A earning what C spends for the same GPU-seconds.
// Then a member that is not a shoal daemon pulls A's receipts over the
// receipts protocol and pushes back one with a byte of its signature
// flipped and one with its amount raised: A refuses and counts both, and
// its ledger does not change.
func TestCreditsEndToEnd(t *testing.T) {
	ref := referenceBinary(t)
	_, imp := referenceModel(t, ref, "tiny")
	began := time.Now()
	nodes, ids := startPool(t, [][]string{{"--gpu", "RTX 4090:24GiB:16384", "--price", "RTX 4090=36"}, nil, nil})
	a, c := nodes[0], nodes[2]
	t.Logf("three nodes up in %v", time.Since(began))
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(a.Home, "daemon.log")); err == nil {
				t.Logf("A's log ends:\n%s", b[max(0, len(b)-4000):])
			}
		}
	})
	a.Shoal("weights", "add", imp, "--name", "tiny")
	tpl := filepath.Join(t.TempDir(), "ref.yaml")
	if err := os.WriteFile(tpl, []byte(serveTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Shoal("deploy", "-f", tpl, "--set", "model=tiny", "--name", "ref", "--replicas", "1")
	ready := func() bool {
		for _, r := range c.ps()["ref"].Runs {
			if r.State == "ready" {
				return true
			}
		}
		return false
	}
	if !Eventually(20*time.Second, ready) {
		t.Fatalf("ref never ready; ps on C: %+v", c.ps()["ref"])
	}
	servedFrom := time.Now()
	time.Sleep(3 * time.Second) // the replica serves: this is the usage billed, not a wait for convergence
	c.Shoal("rm", "ref")
	servedFor := time.Since(servedFrom)

	// Every node converges on A's receipts.
	var reps []creditsReport
	converged := Eventually(15*time.Second, func() bool {
		reps = reps[:0]
		for _, n := range nodes {
			reps = append(reps, n.credits())
		}
		earned, _, served, _ := reps[0].account(ids[0])
		if earned == 0 || reps[0].Receipts == 0 || len(a.ledger(t).Reservations) != 0 {
			return false // not cut yet, or the replica still runs
		}
		for _, r := range reps[1:] {
			if r.Root != reps[0].Root {
				return false
			}
			if e, _, s, _ := r.account(ids[0]); e != earned || s != served {
				return false
			}
		}
		return true
	})
	if !converged {
		t.Fatalf("credits never agreed: %+v", reps)
	}
	t.Logf("ledgers agree %v after rm: %d receipts, root %s", time.Since(servedFrom)-servedFor, reps[0].Receipts, reps[0].Root[:12])
	for i, r := range reps {
		earnedA, spentA, servedA, _ := r.account(ids[0])
		_, spentC, _, consumedC := r.account(ids[2])
		earnedB, spentB, _, _ := r.account(ids[1])
		if r.Accepted != r.Receipts || len(r.RejectedByReason) != 0 {
			t.Errorf("node %d counts %d of %d receipts, refused %v; want all, none refused", i, r.Accepted, r.Receipts, r.RejectedByReason)
		}
		if earnedA != spentC || servedA != consumedC || spentA != 0 || earnedB != 0 || spentB != 0 {
			t.Errorf("node %d: A earned %d (spent %d) for %.3f GPU-s, C spent %d for %.3f GPU-s, B %d/%d; want A's earnings = C's spending, B untouched",
				i, earnedA, spentA, servedA, spentC, consumedC, earnedB, spentB)
		}
		// 36 credits per GPU-hour is 10 000 micro-credits per GPU-second.
		if want := int64(servedA * 10_000); servedA < 2 || servedA > servedFor.Seconds()+2 || earnedA < want-1 || earnedA > want+1 {
			t.Errorf("node %d: A served %.3f GPU-s for %d micro-credits; want about %.1f GPU-s (served %v) at 10000 per GPU-s",
				i, servedA, earnedA, servedFor.Seconds(), servedFor)
		}
	}
	out, _, err := Run(t, "--home", c.Home, "credits")
	if err != nil || !strings.Contains(out, ids[0][:12]) || !strings.Contains(out, "PEER") {
		t.Errorf("shoal credits on C = %q, %v; want a table naming A", out, err)
	}

	// A deployment that pays at most 1 credit per GPU-hour is not placed on
	// A, the only card, which asks 36: the refusal counts A as priced out.
	c.Shoal("deploy", "-f", tpl, "--set", "model=tiny", "--name", "cheap", "--replicas", "1", "--max-price", "1")
	var cheap deployment
	if !Eventually(15*time.Second, func() bool {
		cheap = c.ps()["cheap"]
		return cheap.Status.Reason != ""
	}) || cheap.Status.State == "placed" || !strings.Contains(cheap.Status.Detail, "price above limit: 1") {
		t.Errorf("cheap deployment: state %q, %s; want it unplaced, one node above its price limit", cheap.Status.State, cheap.Status.Detail)
	}
	if _, stderr, err := Run(t, "--home", c.Home, "deploy", "-f", tpl, "--name", "bad", "--max-price", "lots"); err == nil || !strings.Contains(stderr, "max-price") {
		t.Errorf("deploy --max-price lots: err %v, stderr %q; want a usage error naming the flag", err, stderr)
	}

	// A member that is not a shoal daemon tampers with A's receipts.
	before := a.credits()
	pool, err := mesh.ParseToken(a.Token())
	if err != nil {
		t.Fatal(err)
	}
	evil := meshtest.Start(t, meshtest.Config(t, pool, "evil"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := evil.Join(ctx); err != nil {
		t.Fatal(err)
	}
	aID, err := peer.Decode(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	st, err := evil.OpenStream(ctx, aID, "/shoal/receipts/1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	type frame struct {
		Heads    []json.RawMessage `json:"heads,omitempty"`
		Receipts [][]byte          `json:"receipts,omitempty"`
	}
	write := func(f frame) {
		b, _ := json.Marshal(f)
		if _, err := st.Write(append(binary.AppendUvarint(nil, uint64(len(b))), b...)); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(st)
	write(frame{}) // no heads: A answers with everything
	n, err := binary.ReadUvarint(br)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	var answer frame
	if err := json.Unmarshal(body, &answer); err != nil || len(answer.Receipts) == 0 {
		t.Fatalf("A's answer %s: %v; want its receipts", body, err)
	}
	flipped := bytes.Clone(answer.Receipts[0])
	flipped[len(flipped)-7] ^= 0x01 // inside the signature
	write(frame{Receipts: [][]byte{flipped, inflate(t, answer.Receipts[0])}})
	_ = st.CloseWrite()
	_, _ = br.ReadByte()
	st.Close()

	after := a.credits()
	if after.RejectedByReason[string(market.ReasonSignature)] != 1 || after.RejectedByReason[string(market.ReasonAmount)] != 1 {
		t.Errorf("A refused %v after the tampered push; want one bad signature and one amount", after.RejectedByReason)
	}
	if after.Root != before.Root || after.Receipts != before.Receipts {
		t.Errorf("A's ledger changed: %d receipts root %s, was %d root %s", after.Receipts, after.Root, before.Receipts, before.Root)
	}
	if m := controlGet(t, a.Home, "/metrics"); !strings.Contains(m, `shoal_market_receipts_rejected_total{reason="bad signature"} 1`) {
		t.Errorf("A's /metrics lacks the rejected receipt")
	}

	t.Logf("whole scenario %v", time.Since(began))
}

// inflate returns raw with its amount raised by one micro-credit and the
// signature left as it was. The encoding ends in the amount, the sequence
// number, the signature's length (64) and the ed25519 signature.
func inflate(t *testing.T, raw []byte) []byte {
	t.Helper()
	r, err := market.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	amount := binary.AppendUvarint(nil, uint64(r.Amount))
	end := len(raw) - 64 - 1 - len(binary.AppendUvarint(nil, r.Seq))
	if raw[len(raw)-65] != 64 || !bytes.Equal(raw[end-len(amount):end], amount) {
		t.Fatalf("receipt does not end in amount %d, seq %d and a 64-byte signature", r.Amount, r.Seq)
	}
	out := append(bytes.Clone(raw[:end-len(amount)]), binary.AppendUvarint(nil, uint64(r.Amount)+1)...)
	return append(out, raw[end:]...)
}
