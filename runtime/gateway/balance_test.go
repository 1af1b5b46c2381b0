package gateway

import (
	"math/rand/v2"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestPick(t *testing.T) {
	const self, other, third peer.ID = "self", "other", "third"
	r := func(id string, node peer.ID, load int) Replica { return Replica{ID: id, Node: node, Load: load} }
	for _, c := range []struct {
		name string
		rs   []Replica
		want map[string]bool // acceptable picks
	}{
		{"none", nil, nil},
		{"one remote", []Replica{r("a", other, 5)}, map[string]bool{"a": true}},
		{"local beats less loaded remote", []Replica{r("a", other, 0), r("b", self, 9), r("c", third, 0)}, map[string]bool{"b": true}},
		{"least loaded of two", []Replica{r("a", other, 3), r("b", third, 1)}, map[string]bool{"b": true}},
		{"least loaded of two locals", []Replica{r("a", self, 3), r("x", other, 0), r("b", self, 1)}, map[string]bool{"b": true}},
	} {
		for seed := range uint64(20) {
			rnd := rand.New(rand.NewPCG(seed, 1))
			got, ok := pick(c.rs, self, func(r Replica) int { return r.Load }, rnd.IntN)
			if ok != (c.want != nil) || (ok && !c.want[got.ID]) {
				t.Errorf("%s: pick(seed %d) = %s, %v; want one of %v", c.name, seed, got.ID, ok, c.want)
			}
		}
	}
}

// TestPickSpreads: among equally loaded replicas every one is chosen, and
// the most loaded of three never is.
func TestPickSpreads(t *testing.T) {
	rs := []Replica{{ID: "a", Node: "n1", Load: 0}, {ID: "b", Node: "n2", Load: 0}, {ID: "c", Node: "n3", Load: 10}}
	rnd := rand.New(rand.NewPCG(7, 7))
	count := map[string]int{}
	for range 3000 {
		got, _ := pick(rs, "self", func(r Replica) int { return r.Load }, rnd.IntN)
		count[got.ID]++
	}
	if count["c"] != 0 || count["a"] < 1200 || count["b"] < 1200 {
		t.Errorf("picks = %v; want a and b about evenly, c never", count)
	}
}
