package market

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestWeight(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    Account
		want float64
	}{
		{"newcomer", Account{}, 1},
		{"served 1 GPU-hour", Account{Served: GPUHour}, 2},
		{"served 3 GPU-hours", Account{Served: 3 * GPUHour}, 3},
		{"served 1023 GPU-hours", Account{Served: 1023 * GPUHour}, 11},
		{"consumed 3 GPU-hours", Account{Consumed: 3 * GPUHour}, 1.0 / 3},
		{"served as much as consumed", Account{Served: 7 * GPUHour, Consumed: 7 * GPUHour}, 1},
		{"money does not weigh", Account{Earned: 1000 * Credit}, 1},
	} {
		if got := Weight(tc.a); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: Weight(%+v) = %v; want %v", tc.name, tc.a, got, tc.want)
		}
	}
}

func TestOrder(t *testing.T) {
	big, small, fresh, taker := newIdent(t, 1).id, newIdent(t, 2).id, newIdent(t, 3).id, newIdent(t, 4).id
	accounts := func(id peer.ID) Account {
		switch id {
		case big:
			return Account{Served: 1023 * GPUHour} // weight 11
		case small:
			return Account{Served: GPUHour} // weight 2
		case taker:
			return Account{Consumed: 3 * GPUHour} // weight 1/3
		}
		return Account{} // fresh: weight 1
	}
	w := func(id string, who peer.ID, milli int64, arrival uint64) Waiting {
		return Waiting{ID: id, Identity: who, Milli: milli, Arrival: arrival}
	}
	for _, tc := range []struct {
		name     string
		waiting  []Waiting
		accounts func(peer.ID) Account
		held     map[peer.ID]int64
		want     []string
	}{
		{
			name:    "free pool, nobody holds anything: arrival order",
			waiting: []Waiting{w("a", big, 1000, 3), w("b", small, 1000, 1), w("c", fresh, 1000, 2)},
			want:    []string{"b", "c", "a"},
		},
		{
			name:    "free pool: one identity cannot take every turn",
			waiting: []Waiting{w("a1", big, 1000, 1), w("a2", big, 1000, 2), w("a3", big, 1000, 3), w("b1", small, 1000, 4)},
			want:    []string{"a1", "b1", "a2", "a3"},
		},
		{
			name:     "contributor goes before consumer with the same holdings",
			waiting:  []Waiting{w("t", taker, 1000, 1), w("f", fresh, 1000, 2), w("b", big, 1000, 3)},
			accounts: accounts,
			held:     map[peer.ID]int64{taker: 1000, fresh: 1000, big: 1000},
			want:     []string{"b", "f", "t"},
		},
		{
			name:     "big contributor gets several GPUs before a newcomer's second",
			waiting:  []Waiting{w("b1", big, 1000, 1), w("b2", big, 1000, 2), w("b3", big, 1000, 3), w("f1", fresh, 1000, 4), w("f2", fresh, 1000, 5)},
			accounts: accounts,
			want:     []string{"b1", "f1", "b2", "b3", "f2"},
		},
		{
			name:     "nobody holds anything: the bigger contributor first, though it came last",
			waiting:  []Waiting{w("t", taker, 1000, 1), w("f", fresh, 1000, 2), w("s", small, 1000, 3), w("b", big, 1000, 4)},
			accounts: accounts,
			want:     []string{"b", "s", "f", "t"},
		},
		{
			name:     "what one already holds counts against it",
			waiting:  []Waiting{w("s", small, 1000, 1), w("f", fresh, 1000, 2)},
			accounts: accounts,
			held:     map[peer.ID]int64{small: 4000},
			want:     []string{"f", "s"},
		},
		{
			name:     "a consumer still gets its turn",
			waiting:  []Waiting{w("t", taker, 500, 1), w("b1", big, 1000, 2), w("b2", big, 1000, 3), w("b3", big, 1000, 4), w("b4", big, 1000, 5)},
			accounts: accounts,
			held:     map[peer.ID]int64{big: 1000},
			want:     []string{"t", "b1", "b2", "b3", "b4"},
		},
		{
			name:    "ties by arrival, then request ID",
			waiting: []Waiting{w("z", small, 0, 1), w("y", fresh, 0, 1), w("x", big, 0, 0)},
			want:    []string{"x", "y", "z"},
		},
		{
			name: "empty",
			want: []string{},
		},
	} {
		in := slices.Clone(tc.waiting)
		got := Order(tc.waiting, tc.accounts, tc.held)
		ids := make([]string, 0, len(got))
		for _, g := range got {
			ids = append(ids, g.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("%s: Order = %v; want %v", tc.name, ids, tc.want)
		}
		if !slices.Equal(in, tc.waiting) {
			t.Errorf("%s: Order changed its input", tc.name)
		}
	}
}

// TestOrderProperties checks over random queues that Order never drops or
// repeats a request (fair share reorders, it never leaves work out, so a
// lone request is always first and a card is never kept from it), keeps
// each identity's own requests in arrival order, and with nothing held
// gives the first turn to a heaviest identity.
func TestOrderProperties(t *testing.T) {
	ids := []peer.ID{newIdent(t, 11).id, newIdent(t, 12).id, newIdent(t, 13).id, newIdent(t, 14).id}
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 500 {
		served := map[peer.ID]GPUTime{}
		consumed := map[peer.ID]GPUTime{}
		for _, id := range ids {
			served[id] = GPUTime(rng.IntN(2000)) * GPUHour / 10
			consumed[id] = GPUTime(rng.IntN(2000)) * GPUHour / 10
		}
		accounts := func(id peer.ID) Account { return Account{Served: served[id], Consumed: consumed[id]} }
		var waiting []Waiting
		for i := range 1 + rng.IntN(12) {
			waiting = append(waiting, Waiting{
				ID: fmt.Sprintf("r%02d", i), Identity: ids[rng.IntN(len(ids))],
				Milli: int64(1 + rng.IntN(2000)), Arrival: uint64(rng.IntN(20)),
			})
		}
		got := Order(waiting, accounts, nil)
		if len(got) != len(waiting) {
			t.Fatalf("round %d: Order returned %d of %d requests", round, len(got), len(waiting))
		}
		seen := map[string]bool{}
		last := map[peer.ID]Waiting{}
		for _, g := range got {
			if seen[g.ID] {
				t.Fatalf("round %d: request %s twice in %v", round, g.ID, got)
			}
			seen[g.ID] = true
			if p, ok := last[g.Identity]; ok && (p.Arrival > g.Arrival || (p.Arrival == g.Arrival && p.ID > g.ID)) {
				t.Fatalf("round %d: %s before %s of the same identity", round, p.ID, g.ID)
			}
			last[g.Identity] = g
		}
		for _, x := range waiting {
			if Weight(accounts(x.Identity)) > Weight(accounts(got[0].Identity)) {
				t.Fatalf("round %d: first turn to %s (weight %v) while %s weighs %v", round, got[0].ID,
					Weight(accounts(got[0].Identity)), x.ID, Weight(accounts(x.Identity)))
			}
		}
		if one := Order(waiting[:1], accounts, map[peer.ID]int64{waiting[0].Identity: 1 << 40}); len(one) != 1 || one[0].ID != waiting[0].ID {
			t.Fatalf("round %d: a lone request, however much its identity holds: Order = %v", round, one)
		}
	}
}
