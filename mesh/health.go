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

// observe folds in one tick: late says the tick fired well after its time,
// lost says gossip was dropped since the last tick. It returns the score.
func (h *localHealth) observe(late, lost bool) int {
	switch {
	case late || lost:
		if h.score < maxHealthScore {
			h.score++
		}
	case h.score > 0:
		h.score--
	}
	return h.score
}
