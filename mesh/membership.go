package mesh

import (
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// State is a member's liveness as this node sees it.
type State string

const (
	// StateAlive: heartbeats arrive.
	StateAlive State = "alive"
	// StateSuspect: heartbeats stopped for longer than SuspectAfter.
	StateSuspect State = "suspect"
	// StateDead: heartbeats stopped for longer than DeadAfter.
	StateDead State = "dead"
	// StateLeft: the member said goodbye.
	StateLeft State = "left"
)

// Load is the fast-changing part of a member's state, carried by heartbeats.
type Load struct {
	GPUUtilPct    []int    `json:"gpu_util_pct,omitempty"`
	VRAMFreeBytes []uint64 `json:"vram_free_bytes,omitempty"`
	CPULoad1      float64  `json:"cpu_load1,omitempty"`
}

// Member is one node of the pool as this node sees it.
type Member struct {
	PeerID   peer.ID
	State    State
	Self     bool
	LastSeen time.Time
	Record   *Record // latest verified record; nil until one arrived
	Load     Load
}

// heartbeat is the gossip message a member sends every HeartbeatInterval.
type heartbeat struct {
	Instance  string `json:"i"`
	Seq       uint64 `json:"s"` // counts heartbeats of this instance
	RecordSeq uint64 `json:"r"` // Seq of the sender's current record
	Leaving   bool   `json:"l,omitempty"`
	Load      Load   `json:"load"`
	// SentMs is the sender's clock when it sent the heartbeat (Unix ms).
	// Receivers compare its delay with the least delay seen from that
	// sender (which absorbs clock skew) to notice that heartbeats queue up
	// on their side; see membership.takeLag.
	SentMs int64 `json:"t,omitempty"`
}

// timing holds the failure detector's thresholds.
type timing struct {
	suspectAfter time.Duration // silence before alive becomes suspect
	deadAfter    time.Duration // silence before suspect becomes dead
	forgetAfter  time.Duration // how long dead and left members stay listed
}

type memberState struct {
	state     State
	lastSeen  time.Time
	instance  string
	hbSeq     uint64
	recordSeq uint64 // highest record Seq the member advertised
	record    *Record
	raw       []byte // the signed bytes of record, to relay to other members
	load      Load
	// baseDelay is the least delay (receipt minus SentMs) seen from this
	// member, drifting up slowly: clock skew plus the network's own delay.
	baseDelay time.Duration
	hasBase   bool
}

// transition is a state change worth a log line and a metric.
type transition struct {
	peer     peer.ID
	from, to State
}

// membership is the failure detector: a plain state machine, fed heartbeats,
// records and ticks with the time they happened, that does no I/O.
// It is not safe for concurrent use; Node guards it.
type membership struct {
	t       timing
	members map[peer.ID]*memberState
	// stretch multiplies suspectAfter and deadAfter while this node itself
	// is unhealthy (see localHealth); 1 when healthy.
	stretch time.Duration
	// lag is the largest delay beyond a member's usual one among the
	// heartbeats since the last takeLag: how far behind this node is.
	lag time.Duration
}

func newMembership(t timing) *membership {
	return &membership{t: t, members: map[peer.ID]*memberState{}, stretch: 1}
}

// heartbeat records a heartbeat from id at now. It reports whether the sender
// advertises a record newer than the one held, and the state change, if any.
func (m *membership) heartbeat(now time.Time, id peer.ID, hb heartbeat) (wantRecord bool, tr *transition) {
	ms, ok := m.members[id]
	if !ok {
		ms = &memberState{state: StateAlive, instance: hb.Instance}
		m.members[id] = ms
		tr = &transition{peer: id, from: "", to: StateAlive}
	}
	switch {
	case hb.Instance != ms.instance:
		// A restarted daemon: new instance, heartbeat counter starts over.
		ms.instance, ms.hbSeq = hb.Instance, 0
	case hb.Seq <= ms.hbSeq && ms.hbSeq != 0:
		return false, tr // duplicate or reordered
	case ms.state == StateLeft:
		return false, tr // late heartbeat from an instance that left
	}
	ms.hbSeq = hb.Seq
	ms.lastSeen = now
	if hb.SentMs > 0 {
		d := now.Sub(time.UnixMilli(hb.SentMs))
		switch {
		case !ms.hasBase || d < ms.baseDelay:
			ms.baseDelay, ms.hasBase = d, true
		default:
			// Drift up by 1/64 of the excess per beat, so a stepped clock
			// is forgotten within a minute or two of heartbeats.
			excess := d - ms.baseDelay
			if excess > m.lag {
				m.lag = excess
			}
			ms.baseDelay += excess / 64
		}
	}
	ms.load = hb.Load
	if hb.RecordSeq > ms.recordSeq {
		ms.recordSeq = hb.RecordSeq
	}
	to := StateAlive
	if hb.Leaving {
		to = StateLeft
	}
	if ms.state != to {
		if tr == nil {
			tr = &transition{peer: id, from: ms.state}
		}
		tr.to = to
		ms.state = to
	}
	return to == StateAlive && (ms.record == nil || ms.record.Seq < ms.recordSeq), tr
}

// record stores a verified record if it is newer than the one held. A record
// alone says nothing of liveness: a member unknown so far is added only when
// live is true (it came straight from the member).
func (m *membership) record(now time.Time, id peer.ID, r *Record, raw []byte, live bool) (stored bool, tr *transition) {
	ms, ok := m.members[id]
	if !ok {
		if !live {
			return false, nil
		}
		ms = &memberState{state: StateAlive, instance: r.Instance, lastSeen: now}
		m.members[id] = ms
		tr = &transition{peer: id, from: "", to: StateAlive}
	}
	if ms.record != nil && ms.record.Seq >= r.Seq {
		return false, tr
	}
	ms.record, ms.raw = r, raw
	if r.Seq > ms.recordSeq {
		ms.recordSeq = r.Seq
	}
	if live && ms.state != StateAlive && ms.state != StateLeft {
		tr = &transition{peer: id, from: ms.state, to: StateAlive}
		ms.state, ms.lastSeen = StateAlive, now
	}
	return true, tr
}

// leave marks id as gone by its own word.
func (m *membership) leave(now time.Time, id peer.ID) *transition {
	ms, ok := m.members[id]
	if !ok || ms.state == StateLeft {
		return nil
	}
	tr := &transition{peer: id, from: ms.state, to: StateLeft}
	ms.state, ms.lastSeen = StateLeft, now
	return tr
}

// takeLag returns how far behind usual the most delayed heartbeat since the
// last call arrived, and starts over.
func (m *membership) takeLag() time.Duration {
	l := m.lag
	m.lag = 0
	return l
}

// setHealth stretches the suspicion and death timeouts by 1+score while
// this node is unhealthy (score from localHealth).
func (m *membership) setHealth(score int) { m.stretch = time.Duration(1 + score) }

// tick advances the failure detector to now and returns the state changes.
func (m *membership) tick(now time.Time) []transition {
	var out []transition
	suspectAfter, deadAfter := m.t.suspectAfter*m.stretch, m.t.deadAfter*m.stretch
	for id, ms := range m.members {
		silent := now.Sub(ms.lastSeen)
		switch ms.state {
		case StateAlive:
			if silent > deadAfter {
				out = append(out, transition{id, ms.state, StateDead})
				ms.state = StateDead
			} else if silent > suspectAfter {
				out = append(out, transition{id, ms.state, StateSuspect})
				ms.state = StateSuspect
			}
		case StateSuspect:
			if silent > deadAfter {
				out = append(out, transition{id, ms.state, StateDead})
				ms.state = StateDead
			}
		case StateDead, StateLeft:
			if silent > m.t.forgetAfter {
				out = append(out, transition{id, ms.state, ""})
				delete(m.members, id)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].peer < out[j].peer })
	return out
}

// state returns id's state and whether it is known.
func (m *membership) state(id peer.ID) (State, bool) {
	ms, ok := m.members[id]
	if !ok {
		return "", false
	}
	return ms.state, true
}

// recordOf returns the held record of id, or nil.
func (m *membership) recordOf(id peer.ID) *Record {
	if ms, ok := m.members[id]; ok {
		return ms.record
	}
	return nil
}

// rawOf returns the signed bytes of id's held record, or nil.
func (m *membership) rawOf(id peer.ID) []byte {
	if ms, ok := m.members[id]; ok {
		return ms.raw
	}
	return nil
}

// list returns every member, sorted by peer ID.
func (m *membership) list() []Member {
	out := make([]Member, 0, len(m.members))
	for id, ms := range m.members {
		out = append(out, Member{PeerID: id, State: ms.state, LastSeen: ms.lastSeen, Record: ms.record, Load: ms.load})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PeerID < out[j].PeerID })
	return out
}
