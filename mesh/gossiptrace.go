package mesh

import (
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// gossipTracer counts the heartbeats GossipSub lost on the way: RPCs dropped
// because a peer's outbound queue was full, messages our reader was too slow
// to take, and messages refused by validation. A member whose heartbeats are
// lost turns suspect, so these are the first counters to read when members
// flap.
type gossipTracer struct {
	dropped *prometheus.CounterVec
	// lost counts the losses that say this node is overloaded (full
	// queues, a slow reader): the local health score reads it. Refused
	// messages say nothing of our load and are not counted here.
	lost atomic.Int64
}

var _ pubsub.RawTracer = (*gossipTracer)(nil)

func newGossipTracer() *gossipTracer {
	return &gossipTracer{dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_mesh_gossip_dropped_total",
		Help: "Gossip lost by reason: queue_full (an RPC to a slow peer, or validation backed up), slow_reader (a message our reader did not take in time), rejected (validation refused it).",
	}, []string{"reason"})}
}

func (t *gossipTracer) overload(reason string) {
	t.lost.Add(1)
	t.dropped.WithLabelValues(reason).Inc()
}

func (t *gossipTracer) DropRPC(*pubsub.RPC, peer.ID)         { t.overload("queue_full") }
func (t *gossipTracer) UndeliverableMessage(*pubsub.Message) { t.overload("slow_reader") }
func (t *gossipTracer) RejectMessage(_ *pubsub.Message, reason string) {
	switch reason {
	case pubsub.RejectValidationIgnored, pubsub.RejectSelfOrigin:
		// Not a loss: our own message come back, or one we chose to skip.
	case pubsub.RejectValidationQueueFull, pubsub.RejectValidationThrottled:
		t.overload("queue_full")
	default:
		t.dropped.WithLabelValues("rejected").Inc()
	}
}

func (t *gossipTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *gossipTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *gossipTracer) Join(string)                                          {}
func (t *gossipTracer) Leave(string)                                         {}
func (t *gossipTracer) Graft(peer.ID, string)                                {}
func (t *gossipTracer) Prune(peer.ID, string)                                {}
func (t *gossipTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *gossipTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *gossipTracer) DuplicateMessage(*pubsub.Message)                     {}
func (t *gossipTracer) ThrottlePeer(peer.ID)                                 {}
func (t *gossipTracer) RecvRPC(*pubsub.RPC)                                  {}
func (t *gossipTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (t *gossipTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
