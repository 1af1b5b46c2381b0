package node

import (
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
}
