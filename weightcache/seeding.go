package weightcache

// seeding is what a server holding a whole model knows of the fetchers it
// serves that model to: which chunks each holds (their have-maps and have
// messages) and which chunks it has sent. It is a plain state machine (no
// I/O, no locking: the Server serialises calls).
//
// Super-seeding: a whole-model copy is usually the swarm's slowest uplink,
// so each chunk should leave it once and then travel between fetchers. A
// fetcher asks for a chunk it cannot see elsewhere; when that chunk has
// already been sent to (or is held by) another fetcher and there is a chunk
// that nobody holds and nobody was sent, the server sends that one instead
// (frame 'S'): the fetcher gains a chunk to trade and takes the one it
// asked for from the fetcher that has it. When no such chunk is left (the
// tail), the server points the fetcher, once per chunk, at another
// fetcher it sent that chunk to or that holds it (frame 'P'), and sends
// the chunk itself when asked again, so a fetcher never waits long on a
// server that has what it needs. With one fetcher connected nothing
// changes: it gets what it asks for, in its order.
type seeding struct {
	held     []int // sessions whose fetcher holds each chunk
	sent     []int // times each chunk was sent to any session
	sessions []*seedSession
}

// seedSession is one fetcher's chunk session, as the seeding sees it.
type seedSession struct {
	peer   string      // the fetcher (sessions of one peer never point at each other)
	has    []bool      // chunks the fetcher said it holds
	got    []bool      // chunks sent to it
	asked  map[int]int // chunks requested and not answered yet
	hinted map[int]bool
}

func newSeeding(n int) *seeding {
	return &seeding{held: make([]int, n), sent: make([]int, n)}
}

// join registers a session of fetcher peer, which holds has (len n).
func (sd *seeding) join(peer string, has []bool) *seedSession {
	ss := &seedSession{peer: peer, has: has, got: make([]bool, len(has)), asked: map[int]int{}, hinted: map[int]bool{}}
	for i, h := range has {
		if h {
			sd.held[i]++
		}
	}
	sd.sessions = append(sd.sessions, ss)
	return ss
}

// leave forgets a session.
func (sd *seeding) leave(ss *seedSession) {
	for i, h := range ss.has {
		if h {
			sd.held[i]--
		}
	}
	for k, o := range sd.sessions {
		if o == ss {
			sd.sessions = append(sd.sessions[:k], sd.sessions[k+1:]...)
			break
		}
	}
}

// gotHave records that the fetcher of ss now holds chunk i.
func (sd *seeding) gotHave(ss *seedSession, i int) {
	if !ss.has[i] {
		ss.has[i] = true
		sd.held[i]++
	}
}

// request records that ss asked for chunk i.
func (sd *seeding) request(ss *seedSession, i int) { ss.asked[i]++ }

// pick answers the oldest request of ss, for chunk i: the chunk to send
// (i itself or a substitute, counted as sent), or, with hint not nil, no
// chunk but the session of another fetcher to take i from.
func (sd *seeding) pick(ss *seedSession, i int) (j int, hint *seedSession) {
	if ss.asked[i]--; ss.asked[i] <= 0 {
		delete(ss.asked, i)
	}
	j = i
	others := sd.held[i]
	if ss.has[i] {
		others--
	}
	if len(sd.sessions) > 1 && (sd.sent[i] > 0 || others > 0) {
		if c := sd.substitute(ss, i); c >= 0 {
			j = c
		} else if o := sd.holder(ss, i); o != nil && !ss.hinted[i] {
			ss.hinted[i] = true
			return i, o
		}
	}
	sd.sent[j]++
	ss.got[j] = true
	return j, nil
}

// substitute is the first chunk after i that nobody holds, nobody was
// sent, and ss has not asked for; -1 if none.
func (sd *seeding) substitute(ss *seedSession, i int) int {
	n := len(sd.held)
	for k := 1; k < n; k++ {
		c := (i + k) % n
		if sd.sent[c] == 0 && sd.held[c] == 0 && !ss.has[c] && ss.asked[c] == 0 {
			return c
		}
	}
	return -1
}

// holder is another fetcher's session that holds chunk i or was sent it,
// one that says it holds it first; nil if none.
func (sd *seeding) holder(ss *seedSession, i int) *seedSession {
	var sent *seedSession
	for _, o := range sd.sessions {
		if o.peer == ss.peer {
			continue
		}
		if o.has[i] {
			return o
		}
		if o.got[i] && sent == nil {
			sent = o
		}
	}
	return sent
}
