package weightcache

import (
	"math/rand/v2"
	"testing"
)

func TestSeedingOneFetcherGetsWhatItAsks(t *testing.T) {
	sd := newSeeding(8)
	ss := sd.join("a", make([]bool, 8))
	for _, i := range []int{5, 6, 7, 0, 5} {
		sd.request(ss, i)
		if got, hint := sd.pick(ss, i); got != i || hint != nil {
			t.Fatalf("pick(%d) = %d with one fetcher; want %d", i, got, i)
		}
	}
}

func TestSeedingSubstitutesChunkSentElsewhere(t *testing.T) {
	sd := newSeeding(4)
	a := sd.join("a", make([]bool, 4))
	b := sd.join("b", []bool{false, false, true, false}) // b holds chunk 2
	sd.request(a, 0)
	if got, _ := sd.pick(a, 0); got != 0 {
		t.Fatalf("first ask for 0 = %d; want 0", got)
	}
	// b asks for 0, which went to a: it gets 1, the next chunk nobody has.
	sd.request(b, 0)
	if got, _ := sd.pick(b, 0); got != 1 {
		t.Fatalf("b's ask for 0 = %d; want 1", got)
	}
	// a asks for 2, which b holds, and has 3 queued: 3 is no substitute
	// (a asked for it) and nothing else is unsent, so a is pointed at b
	// once, then served.
	sd.request(a, 2)
	sd.request(a, 3)
	if got, hint := sd.pick(a, 2); got != 2 || hint != b {
		t.Fatalf("a's ask for 2 = %d, hint %v; want 2 and b", got, hint)
	}
	if got, hint := sd.pick(a, 3); got != 3 || hint != nil {
		t.Fatalf("a's ask for 3 = %d, hint %v; want 3, no hint", got, hint)
	}
	sd.request(a, 2)
	if got, hint := sd.pick(a, 2); got != 2 || hint != nil {
		t.Fatalf("a's second ask for 2 = %d, hint %v; want the chunk itself", got, hint)
	}
	// b asks for 3, sent to a: pointed at a.
	sd.request(b, 3)
	if _, hint := sd.pick(b, 3); hint != a {
		t.Fatalf("b's ask for 3: hint %v; want a", hint)
	}
	sd.leave(b)
	if len(sd.sessions) != 1 || sd.held[2] != 0 {
		t.Fatalf("after leave: %d sessions, held[2] %d; want 1, 0", len(sd.sessions), sd.held[2])
	}
}

// TestSeedingEachChunkOnceWhileAnyIsUnsent: whatever fetchers ask for, as
// long as some chunk has not left the seed, no chunk leaves it twice, and
// every answer is a chunk the asking fetcher lacks.
func TestSeedingEachChunkOnceWhileAnyIsUnsent(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		n := 1 + rng.IntN(40)
		sd := newSeeding(n)
		fetchers := make([]*seedSession, 2+rng.IntN(6))
		for k := range fetchers {
			fetchers[k] = sd.join(string(rune('a'+k)), make([]bool, n))
		}
		sent := 0
		for step := 0; step < 4*n && sent < n; step++ {
			ss := fetchers[rng.IntN(len(fetchers))]
			var lack []int
			for i, h := range ss.has {
				if !h {
					lack = append(lack, i)
				}
			}
			if len(lack) == 0 {
				continue
			}
			i := lack[rng.IntN(len(lack))]
			sd.request(ss, i)
			got, hint := sd.pick(ss, i)
			if hint != nil {
				t.Fatalf("seed %d: pointed elsewhere while %d of %d chunks were unsent", seed, n-sent, n)
			}
			if ss.has[got] {
				t.Fatalf("seed %d: answered with chunk %d the fetcher holds", seed, got)
			}
			if sd.sent[got] > 1 {
				t.Fatalf("seed %d: chunk %d sent twice while %d of %d chunks were unsent", seed, got, n-sent, n)
			}
			sent++
			sd.gotHave(ss, got)
			// Now and then a fetcher passes a chunk to another (trading).
			if rng.IntN(3) == 0 {
				to := fetchers[rng.IntN(len(fetchers))]
				sd.gotHave(to, got)
			}
		}
	}
}
