package weightcache

import "github.com/libp2p/go-libp2p/core/peer"

// picker decides which chunk to ask which peer for. It is a plain state
// machine (no I/O, no clock, no locking: the fetch serialises calls).
//
// Rarest first: among the chunks a peer has that nobody has been asked
// for, the one the fewest peers have, ties to the first in index order
// from this fetcher's start (so files complete roughly in order and their
// whole-file hash can follow, while fetchers that start at different places
// hold different chunks to trade from the first seconds; with one start for
// all, every fetcher asks the first copy for the same chunks). End
// game: once every missing chunk has been asked for, a peer with room in
// its pipeline is given a chunk already in flight elsewhere (the least
// duplicated, at most maxDup requests per chunk), so a slow or stalled
// peer does not hold up the tail.
type picker struct {
	have   []bool
	avail  []int // live peers that have each chunk
	flight []int // requests in flight per chunk
	left   int   // chunks not held
	peers  map[peer.ID]*pickPeer
	maxDup int
	start  int // index the scan for the rarest chunk begins at
}

type pickPeer struct {
	has  []bool
	nhas int
	reqs map[int]bool
}

func newPicker(have []bool, maxDup, start int) *picker {
	pk := &picker{
		have: append([]bool(nil), have...), avail: make([]int, len(have)),
		flight: make([]int, len(have)), peers: map[peer.ID]*pickPeer{}, maxDup: maxDup,
		start: start,
	}
	for _, h := range have {
		if !h {
			pk.left++
		}
	}
	return pk
}

func (pk *picker) done() bool { return pk.left == 0 }

// addPeer registers p with its have-map (bit i MSB-first = chunk i).
func (pk *picker) addPeer(p peer.ID, bf []byte) {
	pp := &pickPeer{has: make([]bool, len(pk.have)), reqs: map[int]bool{}}
	for i := range pp.has {
		if bf[i/8]&(0x80>>(i%8)) != 0 {
			pp.has[i] = true
			pp.nhas++
			pk.avail[i]++
		}
	}
	pk.peers[p] = pp
}

// removePeer forgets p; its requests in flight go back to the pool.
func (pk *picker) removePeer(p peer.ID) {
	pp := pk.peers[p]
	if pp == nil {
		return
	}
	for i, h := range pp.has {
		if h {
			pk.avail[i]--
		}
	}
	for i := range pp.reqs {
		pk.flight[i]--
	}
	delete(pk.peers, p)
}

// gotHave records that p now has chunk i.
func (pk *picker) gotHave(p peer.ID, i int) {
	pp := pk.peers[p]
	if pp == nil || pp.has[i] {
		return
	}
	pp.has[i] = true
	pp.nhas++
	pk.avail[i]++
}

// useful reports whether p has any chunk still missing.
func (pk *picker) useful(p peer.ID) bool {
	pp := pk.peers[p]
	if pp == nil {
		return false
	}
	for i, h := range pp.has {
		if h && !pk.have[i] {
			return true
		}
	}
	return false
}

// next picks a chunk to request from p and records the request.
func (pk *picker) next(p peer.ID) (int, bool) {
	pp := pk.peers[p]
	if pp == nil || pk.left == 0 {
		return 0, false
	}
	best, unasked := -1, false
	n := len(pp.has)
	for j := range n {
		i := (pk.start + j) % n
		if !pp.has[i] || pk.have[i] || pp.reqs[i] {
			continue
		}
		if pk.flight[i] == 0 {
			if !unasked || pk.avail[i] < pk.avail[best] {
				best, unasked = i, true
			}
		}
	}
	if !unasked {
		// End game only when nothing anywhere is left unasked.
		for i, h := range pk.have {
			if !h && pk.flight[i] == 0 {
				return 0, false
			}
		}
		for i, h := range pp.has {
			if !h || pk.have[i] || pp.reqs[i] || pk.flight[i] >= pk.maxDup {
				continue
			}
			if best < 0 || pk.flight[i] < pk.flight[best] {
				best = i
			}
		}
		if best < 0 {
			return 0, false
		}
	}
	pp.reqs[best] = true
	pk.flight[best]++
	return best, true
}

// received records that p answered its request for chunk i; ok says the
// chunk verified. It reports whether the chunk is new (not an end-game
// duplicate).
func (pk *picker) received(p peer.ID, i int, ok bool) bool {
	if pp := pk.peers[p]; pp != nil && pp.reqs[i] {
		delete(pp.reqs, i)
		pk.flight[i]--
	}
	if !ok || pk.have[i] {
		return false
	}
	pk.have[i] = true
	pk.left--
	return true
}

// inFlight is the number of requests p has outstanding.
func (pk *picker) inFlight(p peer.ID) int {
	if pp := pk.peers[p]; pp != nil {
		return len(pp.reqs)
	}
	return 0
}
