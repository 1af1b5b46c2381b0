package market

import (
	"math"
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
