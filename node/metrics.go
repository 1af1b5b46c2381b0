package node

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/hardware"
)

// metrics are the daemon's own series in the registry it shares with the
// mesh (which exports membership as shoal_mesh_*). Gauges are read at scrape
// time from values the run loop stores.
type metrics struct {
	probeErrors prometheus.Counter
	gpus        atomic.Int64
	inventory   atomic.Pointer[hardware.Inventory] // the last one observed
}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{
		probeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_node_inventory_probe_errors_total",
			Help: "Hardware probes that failed.",
		}),
	}
	gauge := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	reg.MustRegister(
		m.probeErrors,
		gauge("shoal_node_gpus", "GPUs in this node's last inventory.", &m.gpus),
		gpuCollector{m},
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
