package node

import (
	"bytes"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

func fairPeer(t *testing.T, seed byte) peer.ID {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// orderWaiting hands the coordinator market.Order over the ledger's
// accounts, with owners as the peer IDs deployments carry.
func TestOrderWaiting(t *testing.T) {
	rich, poor := fairPeer(t, 1), fairPeer(t, 2)
	accounts := func(id peer.ID) market.Account {
		if id == rich {
			return market.Account{Peer: id, Served: 100 * market.GPUHour}
		}
		return market.Account{Peer: id}
	}
	ws := []coordinator.Waiting{
		{ID: "p", Owner: poor.String(), Milli: 1000, Arrival: 1},
		{ID: "x", Owner: "not-a-peer", Milli: 1000, Arrival: 2},
		{ID: "r", Owner: rich.String(), Milli: 1000, Arrival: 3},
	}
	ids := func(out []coordinator.Waiting) []string {
		var s []string
		for _, w := range out {
			s = append(s, w.ID)
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		accounts func(peer.ID) market.Account
		held     map[string]int64
		want     []string
	}{
		{"no ledger: arrival order", nil, nil, []string{"p", "x", "r"}},
		{"the contributor first", accounts, nil, []string{"r", "p", "x"}},
		{"what it holds counts against it", accounts, map[string]int64{rich.String(): 100_000}, []string{"p", "x", "r"}},
	} {
		if got := ids(orderWaiting(ws, tc.held, tc.accounts)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: orderWaiting = %v; want %v", tc.name, got, tc.want)
		}
	}
}
