package node

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// metrics are the daemon's own series in the registry it shares with the
// mesh (which exports membership as shoal_mesh_*). Gauges are read at scrape
// time from values the run loop stores.
type metrics struct {
	probeErrors prometheus.Counter
	gpus        atomic.Int64
	inventory   atomic.Pointer[hardware.Inventory] // the last one observed
	sched       *schedulerMetrics
	// weightsIn, weightsOut count the bytes of weight transfers on this
	// node's /shoal/weights streams (fetched, served).
	weightsIn, weightsOut *meter
}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{
		probeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_node_inventory_probe_errors_total",
			Help: "Hardware probes that failed.",
		}),
		sched:      newSchedulerMetrics(),
		weightsIn:  newMeter(time.Now),
		weightsOut: newMeter(time.Now),
	}
	counter := func(name, help string, v *meter) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v.total.Load()) })
	}
	rate := func(name, help string, v *meter) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v.rate)
	}
	gauge := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	reg.MustRegister(
		m.probeErrors,
		gauge("shoal_node_gpus", "GPUs in this node's last inventory.", &m.gpus),
		gpuCollector{m},
		m.sched.placements, m.sched.refusals,
		counter("shoal_weights_received_bytes_total", "Bytes received on weight transfer streams (chunks fetched from peers, with protocol framing).", m.weightsIn),
		counter("shoal_weights_sent_bytes_total", "Bytes sent on weight transfer streams (chunks served to peers, with protocol framing).", m.weightsOut),
		rate("shoal_weights_receive_rate_bytes_per_second", "Weight transfer bytes received per second over the last 10 complete seconds.", m.weightsIn),
		rate("shoal_weights_send_rate_bytes_per_second", "Weight transfer bytes sent per second over the last 10 complete seconds.", m.weightsOut),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "shoal_node_info",
			Help:        "Always 1; labels describe the daemon.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }),
	)
	return m
}

func (m *metrics) observe(inv hardware.Inventory) {
	m.gpus.Store(int64(len(inv.GPUs)))
	m.inventory.Store(&inv)
}

// GPU telemetry per card of this node's last inventory. Labels: gpu (UUID),
// index (position in the inventory), name, and source: measured (NVML) or declared (nothing measured:
// used VRAM and utilisation stay 0).
var (
	gpuLabels    = []string{"gpu", "index", "name", "source"}
	gpuVRAMTotal = prometheus.NewDesc("shoal_node_gpu_vram_total_bytes", "GPU memory of the card.", gpuLabels, nil)
	gpuVRAMUsed  = prometheus.NewDesc("shoal_node_gpu_vram_used_bytes", "GPU memory in use on the card as the driver reports it.", gpuLabels, nil)
	gpuUtil      = prometheus.NewDesc("shoal_node_gpu_utilization_ratio", "Share of the last sample period the card was busy (0..1).", gpuLabels, nil)
)

// gpuCollector exports the last inventory's cards at scrape time.
type gpuCollector struct{ m *metrics }

func (c gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- gpuVRAMTotal
	ch <- gpuVRAMUsed
	ch <- gpuUtil
}

func (c gpuCollector) Collect(ch chan<- prometheus.Metric) {
	inv := c.m.inventory.Load()
	if inv == nil {
		return
	}
	for i, g := range inv.GPUs {
		// The position in the inventory (the driver's index for measured
		// cards) keeps every series unique even if two cards came with one
		// UUID: a duplicate would fail the whole scrape.
		l := []string{g.UUID, strconv.Itoa(i), g.Name, gpuSource(g.Source)}
		var used uint64
		if g.VRAMFreeBytes < g.VRAMTotalBytes {
			used = g.VRAMTotalBytes - g.VRAMFreeBytes
		}
		ch <- prometheus.MustNewConstMetric(gpuVRAMTotal, prometheus.GaugeValue, float64(g.VRAMTotalBytes), l...)
		ch <- prometheus.MustNewConstMetric(gpuVRAMUsed, prometheus.GaugeValue, float64(used), l...)
		ch <- prometheus.MustNewConstMetric(gpuUtil, prometheus.GaugeValue, float64(g.UtilizationPct)/100, l...)
	}
}

// maxRefusalReasons bounds the reason label: node refusals name a resource
// from the refusing node's answer, so a misbehaving member could otherwise
// grow the label space.
const maxRefusalReasons = 32

// schedulerMetrics counts what this member's coordinator placed and what
// stopped it (coordinator.Metrics).
type schedulerMetrics struct {
	placements *prometheus.CounterVec // policy
	refusals   *prometheus.CounterVec // reason
	mu         sync.Mutex
	reasons    map[string]bool
}

var _ coordinator.Metrics = (*schedulerMetrics)(nil)

func newSchedulerMetrics() *schedulerMetrics {
	return &schedulerMetrics{
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_scheduler_placements_total",
			Help: "Replicas this node's coordinator committed, by placement policy.",
		}, []string{"policy"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_scheduler_refusals_total",
			Help: "Placement attempts of this node's coordinator that stopped short, by reason: the scheduler's " +
				"(a queued deployment is tried at every step), or \"node: \" and the resource a node refused.",
		}, []string{"reason"}),
		reasons: map[string]bool{},
	}
}

func (s *schedulerMetrics) Placed(policy string, replicas int) {
	s.placements.WithLabelValues(policy).Add(float64(replicas))
}

func (s *schedulerMetrics) Refused(reason string) {
	s.mu.Lock()
	if !s.reasons[reason] {
		if len(s.reasons) >= maxRefusalReasons {
			reason = "other"
		}
		s.reasons[reason] = true
	}
	s.mu.Unlock()
	s.refusals.WithLabelValues(reason).Inc()
}

// rateWindow is how many complete seconds a meter's rate spans.
const rateWindow = 10

// meter counts bytes and their rate over the last rateWindow complete
// seconds, in per-second buckets. It takes no lock: two writers starting a
// bucket's second at once may lose a few bytes to the rate (never to the
// total), which a gauge can afford.
type meter struct {
	now     func() time.Time
	total   atomic.Int64
	buckets [rateWindow + 1]struct{ sec, n atomic.Int64 }
}

func newMeter(now func() time.Time) *meter { return &meter{now: now} }

func (m *meter) add(n int) {
	if n <= 0 {
		return
	}
	m.total.Add(int64(n))
	sec := m.now().Unix()
	b := &m.buckets[sec%int64(len(m.buckets))]
	if old := b.sec.Load(); old != sec && b.sec.CompareAndSwap(old, sec) {
		b.n.Store(0)
	}
	b.n.Add(int64(n))
}

// rate is bytes per second over the last rateWindow complete seconds.
func (m *meter) rate() float64 {
	now := m.now().Unix()
	var sum int64
	for i := range m.buckets {
		b := &m.buckets[i]
		if s := b.sec.Load(); s < now && s >= now-rateWindow {
			sum += b.n.Load()
		}
	}
	return float64(sum) / rateWindow
}

// meteredWeights is the weight cache's view of the mesh with every stream
// it opens or serves counted in the node's weight transfer meters.
type meteredWeights struct {
	weightsMesh
	in, out *meter
}

func (m meteredWeights) OpenStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := m.weightsMesh.OpenStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return meteredStream{Stream: s, in: m.in, out: m.out}, nil
}

func (m meteredWeights) Handle(pid protocol.ID, h network.StreamHandler) {
	m.weightsMesh.Handle(pid, func(s network.Stream) { h(meteredStream{Stream: s, in: m.in, out: m.out}) })
}

// meteredStream counts what is read from and written to a stream.
type meteredStream struct {
	network.Stream
	in, out *meter
}

func (s meteredStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	s.in.add(n)
	return n, err
}

func (s meteredStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	s.out.add(n)
	return n, err
}
