package mesh

import (
	"strings"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// meshMetrics counts what the mesh refused and how the membership moves.
type meshMetrics struct {
	admissions      *prometheus.CounterVec
	recordsRejected *prometheus.CounterVec
	gossipRejected  *prometheus.CounterVec
	transitions     *prometheus.CounterVec
	members         *prometheus.GaugeVec
	gossip          *gossipTracer
	health          prometheus.Gauge
	deadConns       prometheus.Counter
	suspicions      atomic.Int64
	deadConnsClosed atomic.Int64
}

func newMeshMetrics(reg prometheus.Registerer, bw *metrics.BandwidthCounter) *meshMetrics {
	m := &meshMetrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mesh_admissions_total",
			Help: "Pool admission handshakes by result (ok, bad_proof, duplicate_identity, timeout, error).",
		}, []string{"result"}),
		recordsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mesh_records_rejected_total",
			Help: "Node records refused, by reason (signature, foreign_peer, stale, replayed, too_large, malformed).",
		}, []string{"reason"}),
		gossipRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mesh_gossip_rejected_total",
			Help: "Gossip messages refused, by reason (too_large, malformed).",
		}, []string{"reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mesh_member_transitions_total",
			Help: "Membership state changes, by the state entered.",
		}, []string{"to"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_mesh_members",
			Help: "Members known to this node (itself excluded), by state.",
		}, []string{"state"}),
		gossip: newGossipTracer(),
		health: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_mesh_local_health_score",
			Help: "How overloaded this node looks to itself (0 healthy, up to 8); failure-detection timeouts are stretched by 1 + score.",
		}),
		deadConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_mesh_dead_connections_closed_total",
			Help: "Connections to suspect or dead members closed because they did not answer a ping.",
		}),
	}
	if reg == nil {
		return m
	}
	// traffic sums the bytes of the protocols match accepts, one way.
	traffic := func(match func(string) bool, in bool) func() float64 {
		return func() float64 {
			var sum int64
			for proto, st := range bw.GetBandwidthByProtocol() {
				if match(string(proto)) {
					if in {
						sum += st.TotalIn
					} else {
						sum += st.TotalOut
					}
				}
			}
			return float64(sum)
		}
	}
	gossip := func(p string) bool { return strings.HasPrefix(p, "/meshsub/") }
	kad := func(p string) bool { return strings.HasPrefix(p, "/shoal/") && strings.HasSuffix(p, "/kad/1.0.0") }
	reg.MustRegister(m.admissions, m.recordsRejected, m.gossipRejected, m.transitions, m.members, m.gossip.dropped, m.health, m.deadConns,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_mesh_gossip_received_bytes_total", Help: "GossipSub bytes received."}, traffic(gossip, true)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_mesh_gossip_sent_bytes_total", Help: "GossipSub bytes sent."}, traffic(gossip, false)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_mesh_dht_received_bytes_total", Help: "Kademlia DHT bytes received."}, traffic(kad, true)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_mesh_dht_sent_bytes_total", Help: "Kademlia DHT bytes sent."}, traffic(kad, false)),
	)
	return m
}
