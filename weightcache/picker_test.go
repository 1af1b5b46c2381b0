package weightcache

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func bits(n int, set func(i int) bool) []byte {
	bf := make([]byte, (n+7)/8)
	for i := 0; i < n; i++ {
		if set(i) {
			bf[i/8] |= 0x80 >> (i % 8)
		}
	}
	return bf
}

func TestPickerRarestFirstThenEndGame(t *testing.T) {
	// Chunk 6 is held already and a lacks it: both peers are partial.
	const n = 7
	have := make([]bool, n)
	have[6] = true
	pk := newPicker(have, 2, 0)
	a, b := peer.ID("a"), peer.ID("b")
	pk.addPeer(a, bits(n, func(i int) bool { return i < 6 }))
	pk.addPeer(b, bits(n, func(i int) bool { return i < 3 }))
	// Chunks 3..5 only a has: rarest, so a gets them first, in index order.
	for _, want := range []int{3, 4, 5, 0} {
		if got, ok := pk.next(a); !ok || got != want {
			t.Fatalf("next(a) = %d, %v; want %d", got, ok, want)
		}
	}
	for _, want := range []int{1, 2} {
		if got, ok := pk.next(b); !ok || got != want {
			t.Fatalf("next(b) = %d, %v; want %d", got, ok, want)
		}
	}
	// Everything is asked for: end game gives b a duplicate of a chunk it
	// has and has not asked for, the least duplicated first.
	if got, ok := pk.next(b); !ok || got != 0 {
		t.Fatalf("end game next(b) = %d, %v; want 0", got, ok)
	}
	if _, ok := pk.next(b); ok {
		t.Fatal("b was given a chunk it does not have or already asked for")
	}
	if !pk.received(b, 0, true) || pk.received(a, 0, true) {
		t.Fatal("chunk 0 must be new once and a duplicate the second time")
	}
	// a is dropped: its requests go back, and b cannot take 3..5.
	pk.removePeer(a)
	if _, ok := pk.next(b); ok {
		t.Fatal("b was given work it cannot do")
	}
}

// TestPickerSeedLast: a peer holding every chunk is asked only for chunks
// no partial peer holds, and joins the end game only for the last chunks.
func TestPickerSeedLast(t *testing.T) {
	const n = 8
	pk := newPicker(make([]bool, n), 2, 0)
	seed, b := peer.ID("seed"), peer.ID("b")
	pk.addPeer(seed, bits(n, func(int) bool { return true }))
	pk.addPeer(b, bits(n, func(i int) bool { return i < 4 }))
	got := map[int]bool{}
	for range 4 {
		i, ok := pk.next(seed)
		if !ok || i < 4 || got[i] {
			t.Fatalf("next(seed) = %d, %v; want a new chunk of 4..7 (so far %v)", i, ok, got)
		}
		got[i] = true
		if j, ok := pk.next(seed); ok {
			t.Fatalf("next(seed) = %d with %d in flight; want one request at a time", j, i)
		}
		pp := pk.peers[seed]
		delete(pp.reqs, i) // as if it were on its way: in flight, not from the seed
	}
	if i, ok := pk.next(seed); ok {
		t.Fatalf("next(seed) = %d; want nothing: b holds the rest", i)
	}
	for want := range 4 {
		if i, ok := pk.next(b); !ok || i != want {
			t.Fatalf("next(b) = %d, %v; want %d", i, ok, want)
		}
	}
	for i := range 7 {
		if i >= 4 {
			pk.flight[i]-- // its sender is not in the test
		}
		pk.received(b, i, true)
	}
	pk.peers[seed].reqs[7] = true // the last chunk is in flight at the seed
	// Once b is a seed too, both are asked as anyone would be.
	pk.gotHave(b, 7)
	pk.gotHave(b, 4)
	pk.gotHave(b, 5)
	pk.gotHave(b, 6)
	if pk.part[7] != 0 {
		t.Fatalf("part[7] = %d after b became a seed; want 0", pk.part[7])
	}
	if i, ok := pk.next(b); !ok || i != 7 {
		t.Fatalf("end game next(b) = %d, %v; want 7", i, ok)
	}
}

// TestPickerProperty drives random swarms to completion and checks the
// invariants every step: a peer is only asked for chunks it has and we
// lack, never twice at once, duplicates only in the end game and at most
// maxDup per chunk, and the download always completes while some peer
// holds each missing chunk.
func TestPickerProperty(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		n := 1 + r.IntN(40)
		have := make([]bool, n)
		for i := range have {
			have[i] = r.IntN(4) == 0
		}
		pk := newPicker(have, 1+r.IntN(3), r.IntN(len(have)+1)%max(len(have), 1))
		peers := make([]peer.ID, 1+r.IntN(5))
		holds := map[peer.ID][]bool{}
		for j := range peers {
			peers[j] = peer.ID(fmt.Sprint("p", j))
			h := make([]bool, n)
			for i := range h {
				h[i] = j == 0 || r.IntN(2) == 0 // peer 0 is a seeder
			}
			holds[peers[j]] = h
			pk.addPeer(peers[j], bits(n, func(i int) bool { return h[i] }))
		}
		inflight := map[peer.ID][]int{}
		for steps := 0; !pk.done(); steps++ {
			if steps > 100*n+100 {
				t.Fatalf("seed %d: no progress", seed)
			}
			p := peers[r.IntN(len(peers))]
			if r.IntN(2) == 0 || len(inflight[p]) == 0 {
				i, ok := pk.next(p)
				if !ok {
					continue
				}
				if !holds[p][i] || pk.have[i] {
					t.Fatalf("seed %d: asked %s for chunk %d (holds %v, have %v)", seed, p, i, holds[p][i], pk.have[i])
				}
				for _, j := range inflight[p] {
					if j == i {
						t.Fatalf("seed %d: chunk %d asked twice of %s", seed, i, p)
					}
				}
				if pk.flight[i] > 1 {
					for k, h := range pk.have {
						if !h && pk.flight[k] == 0 {
							t.Fatalf("seed %d: duplicate request for %d while %d is unasked", seed, i, k)
						}
					}
				}
				if pk.flight[i] > pk.maxDup {
					t.Fatalf("seed %d: chunk %d in flight %d times", seed, i, pk.flight[i])
				}
				inflight[p] = append(inflight[p], i)
				continue
			}
			i := inflight[p][0]
			inflight[p] = inflight[p][1:]
			pk.received(p, i, true)
		}
		for i, h := range pk.have {
			if !h {
				t.Fatalf("seed %d: done with chunk %d missing", seed, i)
			}
		}
	}
}

// TestPickerStartSpreadsFetchers: fetchers of one model that start at
// different places ask the first copy for different chunks, so they have
// chunks to trade at once.
func TestPickerStartSpreadsFetchers(t *testing.T) {
	const n = 6
	seed := peer.ID("seed")
	for _, tc := range []struct {
		start int
		want  []int
	}{
		{0, []int{0, 1, 2, 3, 4, 5}},
		{4, []int{4, 5, 0, 1, 2, 3}},
	} {
		pk := newPicker(make([]bool, n), 2, tc.start)
		pk.addPeer(seed, bits(n, func(int) bool { return true }))
		for _, want := range tc.want {
			if got, ok := pk.next(seed); !ok || got != want {
				t.Fatalf("start %d: next = %d, %v; want %d", tc.start, got, ok, want)
			}
		}
	}
	var c FetchConfig
	if a, b := c.rotation(1000), c.rotation(1000); a == b && c.rotation(1000) == a {
		t.Errorf("random rotation gave %d three times", a)
	}
	c.Seed = 1003
	if got := c.rotation(1000); got != 3 {
		t.Errorf("rotation(1000) with seed 1003 = %d; want 3", got)
	}
}

// TestPickerSubstituteAndPointer: a super-seeding server may answer a
// request with another chunk, or point elsewhere; a chunk it pointed
// elsewhere for is not asked of it again while the peer pointed at is around.
func TestPickerSubstituteAndPointer(t *testing.T) {
	const n = 3
	pk := newPicker(make([]bool, n), 2, 0)
	seed := peer.ID("seed")
	pk.addPeer(seed, bits(n, func(int) bool { return true }))
	if i, ok := pk.next(seed); !ok || i != 0 {
		t.Fatalf("next(seed) = %d, %v; want 0", i, ok)
	}
	// Asked 0, got 2 instead: 0 is free to ask again, 2 is held.
	if !pk.answered(seed, 0, 2, true) || pk.inFlight(seed) != 0 || pk.flight[0] != 0 {
		t.Fatalf("substitute not recorded: new chunk, nothing in flight expected (flight %v)", pk.flight)
	}
	if i, ok := pk.next(seed); !ok || i != 0 {
		t.Fatalf("next(seed) after a substitute = %d, %v; want 0", i, ok)
	}
	a, b := peer.ID("a"), peer.ID("b")
	pk.declined(seed, 0, a)
	if i, ok := pk.next(seed); !ok || i != 1 {
		t.Fatalf("next(seed) after a pointer for 0 = %d, %v; want 1", i, ok)
	}
	pk.declined(seed, 1, b)
	if i, ok := pk.next(seed); ok {
		t.Fatalf("next(seed) = %d; want nothing: it pointed elsewhere for every chunk left", i)
	}
	// b is still around, a is not: only the pointer to a lapses.
	pk.lapseDeclined(func(q peer.ID) bool { return q == b })
	if i, ok := pk.next(seed); !ok || i != 0 {
		t.Fatalf("next(seed) after the pointer to a lapsed = %d, %v; want 0", i, ok)
	}
	if i, ok := pk.next(seed); ok {
		t.Fatalf("next(seed) = %d; want nothing while b is around", i)
	}
	pk.addPeer(b, bits(n, func(int) bool { return false }))
	pk.removePeer(b)
	if i, ok := pk.next(seed); !ok || i != 1 {
		t.Fatalf("next(seed) after b left = %d, %v; want 1", i, ok)
	}
	// A server points elsewhere once per chunk; a second time is refused.
	if pk.declined(seed, 1, b) {
		t.Fatal("a second pointer for chunk 1 was accepted")
	}
}

// TestPickerEndGameOnlyInTheTail: with more chunks missing than
// endGameLeft, nothing is duplicated even when all are in flight.
func TestPickerEndGameOnlyInTheTail(t *testing.T) {
	const n = 6
	pk := newPicker(make([]bool, n), 2, 0)
	pk.endGameLeft = 2
	a, b := peer.ID("a"), peer.ID("b")
	pk.addPeer(a, bits(n, func(i int) bool { return i != 5 }))
	pk.addPeer(b, bits(n, func(i int) bool { return i != 0 }))
	for range 5 {
		if _, ok := pk.next(a); !ok {
			t.Fatal("a had chunks to give")
		}
	}
	if i, ok := pk.next(b); !ok || i != 5 {
		t.Fatalf("next(b) = %d, %v; want 5", i, ok)
	}
	if i, ok := pk.next(b); ok {
		t.Fatalf("next(b) = %d with %d chunks missing; want no duplicate before the last 2", i, n)
	}
	for i := range 4 {
		pk.received(a, i, true)
	}
	if i, ok := pk.next(b); !ok || i != 4 {
		t.Fatalf("next(b) with 2 missing = %d, %v; want the duplicate 4", i, ok)
	}
}
