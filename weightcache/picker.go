package weightcache

import (
	"math/rand/v2"

	"github.com/libp2p/go-libp2p/core/peer"
)

// picker decides which chunk to ask which peer for. It is a plain state
// machine (no I/O, no clock, no locking: the fetch serialises calls).
//
// Rarest first: among the chunks a peer has that nobody has been asked
// for, the one the fewest peers have, ties to the first in index order
// from this fetcher's start (so files complete roughly in order and their
// whole-file hash can follow, while fetchers that start at different places
// hold different chunks to trade from the first seconds; with one start for
// all, every fetcher asks the first copy for the same chunks). End
// game: once every missing chunk has been asked for and at most
// endGameLeft are missing, a peer with room in its pipeline is given a
// chunk already in flight elsewhere (the least duplicated, at most maxDup
// requests per chunk), so a slow or stalled peer does not hold up the
// tail. (With many peers every missing chunk is in flight long before the
// tail: duplicates then would only spend links and CPU.)
//
// Seeds last: a peer that holds every chunk (the first copy, usually the
// swarm's bottleneck uplink) is asked only for chunks no partial peer we
// are connected to holds, picked at random among those (so fetchers that
// cannot see each other's requests rarely ask it for the same chunk), one
// request at a time, and it joins the end game only for the last few
// chunks. What partial peers
// hold comes from them; the seed's uplink goes to chunks nobody else has.
// With no partial peer to trade with, a seed is asked in index order from
// the start like anyone else.
//
// A super-seeding server may answer a request with another chunk
// (answered) or with a pointer to a peer that has it (declined): the
// chunk is not asked of that server again while the peer pointed at is
// around (see lapseDeclined).
type picker struct {
	have   []bool
	avail  []int // live peers that have each chunk
	part   []int // live partial peers (not holding every chunk) that have each chunk
	flight []int // requests in flight per chunk
	left   int   // chunks not held
	peers  map[peer.ID]*pickPeer
	maxDup int
	// endGameLeft: the end game starts only with this many chunks or
	// fewer missing (0: as soon as every missing chunk is asked for).
	// The fetch sets one pipeline's worth, what a stalled peer can hold.
	endGameLeft int
	start       int // index the scan for the rarest chunk begins at
	rng         *rand.Rand
}

// seedPipeline is how many requests a seed may have from this fetcher
// while it trades with partial peers: the seed's queue stays short, so
// what it sends next is picked late, knowing what the others hold by then
// (fetchers cannot see each other's requests, only their chunks).
const seedPipeline = 1

// seedEndGame is how many missing chunks a seed may be asked to
// duplicate in the end game while partial peers hold them too.
const seedEndGame = 2

type pickPeer struct {
	has  []bool
	nhas int
	reqs map[int]bool
	// decl: chunks this peer pointed us elsewhere for, and where; not
	// asked of it again until the pointer lapses.
	decl map[int]peer.ID
	// pointed: chunks it ever pointed elsewhere for in this session (a
	// server points once per chunk; asked again, it sends).
	pointed map[int]bool
}

func newPicker(have []bool, maxDup, start int) *picker {
	pk := &picker{
		have: append([]bool(nil), have...), avail: make([]int, len(have)),
		part: make([]int, len(have)), flight: make([]int, len(have)),
		peers: map[peer.ID]*pickPeer{}, maxDup: maxDup, start: start,
		rng: rand.New(rand.NewPCG(uint64(start), 0x5eed)),
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
	pp := &pickPeer{has: make([]bool, len(pk.have)), reqs: map[int]bool{}, decl: map[int]peer.ID{}, pointed: map[int]bool{}}
	for i := range pp.has {
		if bf[i/8]&(0x80>>(i%8)) != 0 {
			pp.has[i] = true
			pp.nhas++
			pk.avail[i]++
		}
	}
	pk.countPart(pp, 1)
	pk.peers[p] = pp
}

// full reports whether pp holds every chunk.
func (pk *picker) full(pp *pickPeer) bool { return pp.nhas == len(pk.have) }

// countPart adds d to part for the chunks of pp, if it is partial.
func (pk *picker) countPart(pp *pickPeer, d int) {
	if pk.full(pp) {
		return
	}
	for i, h := range pp.has {
		if h {
			pk.part[i] += d
		}
	}
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
	pk.countPart(pp, -1)
	for i := range pp.reqs {
		pk.flight[i]--
	}
	delete(pk.peers, p)
	pk.lapseDeclined(func(q peer.ID) bool { return q != p })
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
	if pk.full(pp) {
		// Now a seed: it no longer counts as a partial holder.
		for j, h := range pp.has {
			if h && j != i {
				pk.part[j]--
			}
		}
	} else {
		pk.part[i]++
	}
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
	if pk.full(pp) {
		if i, ok, trade := pk.nextFromSeed(pp); trade {
			return i, ok
		}
	}
	best, unasked := -1, false
	n := len(pp.has)
	for j := range n {
		i := (pk.start + j) % n
		if !pp.has[i] || pk.have[i] || pp.reqs[i] || pp.declined(i) {
			continue
		}
		if pk.flight[i] == 0 {
			if !unasked || pk.avail[i] < pk.avail[best] {
				best, unasked = i, true
			}
		}
	}
	if !unasked {
		best = pk.endGame(pp)
		if best < 0 {
			return 0, false
		}
	}
	pk.ask(pp, best)
	return best, true
}

// endGame picks a chunk in flight elsewhere for pp to duplicate, the
// least duplicated first, or -1: only when nothing anywhere is left
// unasked.
func (pk *picker) endGame(pp *pickPeer) int {
	if pk.endGameLeft > 0 && pk.left > pk.endGameLeft {
		return -1
	}
	for i, h := range pk.have {
		if !h && pk.flight[i] == 0 {
			return -1
		}
	}
	best := -1
	for i, h := range pp.has {
		if !h || pk.have[i] || pp.reqs[i] || pp.declined(i) || pk.flight[i] >= pk.maxDup {
			continue
		}
		if best < 0 || pk.flight[i] < pk.flight[best] {
			best = i
		}
	}
	return best
}

// nextFromSeed picks for a seed while partial peers hold chunks we lack
// (trade true; else the caller picks as for anyone): a random unasked
// chunk no partial peer holds, or in the last seedEndGame chunks an end
// game duplicate, or nothing.
func (pk *picker) nextFromSeed(pp *pickPeer) (i int, ok, trade bool) {
	var cands []int
	for i, h := range pk.have {
		if h {
			continue
		}
		if pk.part[i] > 0 {
			trade = true
		} else if pk.flight[i] == 0 && !pp.reqs[i] && !pp.declined(i) {
			cands = append(cands, i)
		}
	}
	if !trade {
		return 0, false, false
	}
	if len(pp.reqs) >= seedPipeline {
		return 0, false, true
	}
	if len(cands) > 0 {
		i = cands[pk.rng.IntN(len(cands))]
		pk.ask(pp, i)
		return i, true, true
	}
	if pk.left > seedEndGame {
		return 0, false, true
	}
	if i = pk.endGame(pp); i < 0 {
		return 0, false, true
	}
	pk.ask(pp, i)
	return i, true, true
}

func (pk *picker) ask(pp *pickPeer, i int) {
	pp.reqs[i] = true
	pk.flight[i]++
}

// received records that p answered its request for chunk i; ok says the
// chunk verified. It reports whether the chunk is new (not an end-game
// duplicate).
func (pk *picker) received(p peer.ID, i int, ok bool) bool {
	return pk.answered(p, i, i, ok)
}

// answered records that p answered its request for chunk asked with
// chunk got (another chunk when a super-seeding server substitutes); ok
// says got verified. It reports whether got is new.
func (pk *picker) answered(p peer.ID, asked, got int, ok bool) bool {
	if pp := pk.peers[p]; pp != nil && pp.reqs[asked] {
		delete(pp.reqs, asked)
		pk.flight[asked]--
	}
	if !ok || pk.have[got] {
		return false
	}
	pk.have[got] = true
	pk.left--
	return true
}

func (pp *pickPeer) declined(i int) bool {
	_, ok := pp.decl[i]
	return ok
}

// declined records that p answered its request for chunk i by pointing
// at peer q, which has it or was sent it. It reports false when p had
// pointed elsewhere for i before (the protocol allows once per chunk: a
// peer that keeps pointing would never serve).
func (pk *picker) declined(p peer.ID, i int, q peer.ID) bool {
	pp := pk.peers[p]
	if pp == nil {
		return true
	}
	if pp.reqs[i] {
		delete(pp.reqs, i)
		pk.flight[i]--
	}
	if pp.pointed[i] {
		return false
	}
	pp.pointed[i] = true
	pp.decl[i] = q
	return true
}

// lapseDeclined drops the pointers to peers that keep rejects, so those
// chunks may be asked of the peers that pointed away again. A pointer
// holds while the peer pointed at is connected (it gets the chunk and
// says so, or it leaves); the fetch lapses pointers to a peer whose
// session ended, and on its refresh tick those to peers it could not
// reach, so a pointer never strands a chunk.
func (pk *picker) lapseDeclined(keep func(q peer.ID) bool) {
	for _, pp := range pk.peers {
		for i, q := range pp.decl {
			if !keep(q) {
				delete(pp.decl, i)
			}
		}
	}
}

// inFlight is the number of requests p has outstanding.
func (pk *picker) inFlight(p peer.ID) int {
	if pp := pk.peers[p]; pp != nil {
		return len(pp.reqs)
	}
	return 0
}
