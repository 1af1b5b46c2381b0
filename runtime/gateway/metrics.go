package gateway

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of a gateway. Label "deployment" only ever holds names the
// Directory knows ("" for requests that named none), so clients cannot
// grow the label space.
type metrics struct {
	queueDepth *prometheus.GaugeVec     // deployment
	coldStarts *prometheus.CounterVec   // deployment
	coldWait   *prometheus.HistogramVec // deployment
	ttfb       *prometheus.HistogramVec // deployment, route
	requests   *prometheus.CounterVec   // deployment, code
	inFlight   *prometheus.GaugeVec     // deployment
	replicas   *prometheus.GaugeVec     // deployment, location
}

// Routes of the ttfb histogram.
const (
	routeLocal     = "local"     // to a replica on this node
	routeRemote    = "remote"    // over libp2p to another node's gateway
	routeForwarded = "forwarded" // arrived over libp2p, to a replica here
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	latency := []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	m := &metrics{
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "shoal", Subsystem: "gateway", Name: "queue_depth",
			Help: "Requests waiting for a ready replica.",
		}, []string{"deployment"}),
		coldStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "gateway", Name: "cold_starts_total",
			Help: "Times requests waited for a deployment without a ready replica and one became ready.",
		}, []string{"deployment"}),
		coldWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "shoal", Subsystem: "gateway", Name: "queue_wait_seconds",
			Help:    "How long requests waited for a ready replica.",
			Buckets: latency,
		}, []string{"deployment"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "shoal", Subsystem: "gateway", Name: "time_to_first_byte_seconds",
			Help:    "From a request's arrival to the first byte of its answer, by route.",
			Buckets: latency,
		}, []string{"deployment", "route"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "gateway", Name: "requests_total",
			Help: "Requests answered, by HTTP status code.",
		}, []string{"deployment", "code"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "shoal", Subsystem: "gateway", Name: "in_flight",
			Help: "Requests this gateway received that are waiting or being answered.",
		}, []string{"deployment"}),
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "shoal", Subsystem: "gateway", Name: "ready_replicas",
			Help: "Ready replicas as the directory lists them at the last tick, by location (local, remote).",
		}, []string{"deployment", "location"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.queueDepth, m.coldStarts, m.coldWait, m.ttfb, m.requests, m.inFlight, m.replicas} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("%w: registering metrics: %w", ErrConfig, err)
		}
	}
	return m, nil
}
