package mesh

// localHealth is this node's own health as its failure detector sees it,
// after Lifeguard (Dadgar et al., "Lifeguard: Local Health Awareness for More
// Accurate Failure Detection", 2018): a node that is itself overloaded (its
// ticks fire late, its gossip queues overflow) hears heartbeats late and
// would suspect healthy members. While its score is above zero it stretches
// its own suspicion and death timeouts by (1 + score) instead. The score
// rises by one for every unhealthy tick and falls by one for every healthy
// one, between 0 and maxHealthScore. A plain state machine: the heartbeat
// loop feeds it what it observed.
type localHealth struct {
	score int
}

// maxHealthScore bounds the stretch: at worst a member is declared dead
// after (1 + maxHealthScore) × DeadAfter of silence.
const maxHealthScore = 8

// observe folds in one tick: missed counts the heartbeat intervals the tick
// came late by (a loop stalled for five intervals missed four), lost says
// gossip was dropped since the last tick. A stall raises the score by the
// intervals it lasted (heartbeats that arrive during it are processed late
// and in a burst), a healthy tick lowers it by one. It returns the score.
func (h *localHealth) observe(missed int, lost bool) int {
	bad := missed
	if lost {
		bad++
	}
	switch {
	case bad > 0:
		h.score = min(h.score+bad, maxHealthScore)
	case h.score > 0:
		h.score--
	}
	return h.score
}
