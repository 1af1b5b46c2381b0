package coordinator

import (
	"fmt"
	"testing"
)

func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("12D3KooWpeer%02d", i)
	}
	return out
}

func TestOwnerIsFirstOfRankAndOrderFree(t *testing.T) {
	ms := members(7)
	rev := append([]string(nil), ms...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	for k := 0; k < 200; k++ {
		key := fmt.Sprintf("dep-%d", k)
		r := Rank(key, ms)
		if got := Owner(key, ms); got != r[0] {
			t.Fatalf("Owner(%s) = %s; want Rank[0] %s", key, got, r[0])
		}
		if got := Owner(key, rev); got != r[0] {
			t.Fatalf("Owner(%s) over reversed members = %s; want %s", key, got, r[0])
		}
	}
	if got := Owner("x", nil); got != "" {
		t.Errorf("Owner over no members = %q; want \"\"", got)
	}
}

// Removing a member moves only the keys it owned, each to its second in
// rank; adding one moves keys only to the newcomer. Keys spread evenly.
func TestRendezvousMinimalMovement(t *testing.T) {
	ms := members(10)
	const keys = 5000
	owner := map[string]string{}
	count := map[string]int{}
	for k := 0; k < keys; k++ {
		key := fmt.Sprintf("deployment-%d", k)
		owner[key] = Owner(key, ms)
		count[owner[key]]++
	}
	for m, c := range count {
		if c < keys/10/2 || c > keys/10*2 {
			t.Errorf("member %s owns %d of %d keys; want about %d", m, c, keys, keys/10)
		}
	}
	gone := ms[3]
	without := append(append([]string(nil), ms[:3]...), ms[4:]...)
	for key, was := range owner {
		now := Owner(key, without)
		if was != gone && now != was {
			t.Fatalf("key %s moved from %s to %s when %s left", key, was, now, gone)
		}
		if was == gone && now != Rank(key, ms)[1] {
			t.Fatalf("key %s went to %s; want the second in rank %s", key, now, Rank(key, ms)[1])
		}
	}
	with := append(append([]string(nil), ms...), "12D3KooWnewcomer")
	for key, was := range owner {
		if now := Owner(key, with); now != was && now != "12D3KooWnewcomer" {
			t.Fatalf("key %s moved from %s to %s when a member joined", key, was, now)
		}
	}
}

func TestSurplusKeepsLowestIDs(t *testing.T) {
	tests := []struct {
		ids     []string
		desired int
		want    []string
	}{
		{[]string{"d/2", "d/1"}, 2, nil},
		{[]string{"d/3", "d/1", "d/2"}, 2, []string{"d/3"}},
		{[]string{"d/b", "d/a", "d/c"}, 0, []string{"d/a", "d/b", "d/c"}},
	}
	for _, tt := range tests {
		got := Surplus(tt.ids, tt.desired)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Surplus(%v, %d) = %v; want %v", tt.ids, tt.desired, got, tt.want)
		}
	}
}
