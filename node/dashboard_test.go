package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/dashboard"
	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
)

type members []mesh.Member

func (m members) Members() []mesh.Member { return m }

func TestDashboardNodes(t *testing.T) {
	self, other := testPeer(t, 1), testPeer(t, 2)
	rec := func(name string, gpus []hardware.GPU, free *mesh.FreeCapacity, models int) *mesh.Record {
		r := &mesh.Record{Name: name, Inventory: hardware.Inventory{GPUs: gpus, Host: hardware.Host{CPUCores: 8}}, Free: free}
		for range models {
			r.Models = append(r.Models, mesh.ModelRef{ID: "m"})
		}
		return r
	}
	ms := members{
		{PeerID: other, State: mesh.StateSuspect, Record: rec("lab1", []hardware.GPU{
			{UUID: "GPU-n", Name: "RTX 4090", VRAMTotalBytes: 24 << 30, VRAMFreeBytes: 20 << 30, UtilizationPct: 5, Source: hardware.SourceNVML},
		}, nil, 2),
			// The heartbeat's load overrides the record's figures.
			Load: mesh.Load{GPUUtilPct: []int{70}, VRAMFreeBytes: []uint64{8 << 30}, CPULoad1: 1.5}},
		{PeerID: self, Self: true, State: mesh.StateAlive, Record: rec("tower", []hardware.GPU{
			{UUID: "GPU-d", Name: "RTX 3060", VRAMTotalBytes: 12 << 30, VRAMFreeBytes: 12 << 30, Source: hardware.SourceDeclared},
		}, &mesh.FreeCapacity{GPUs: []mesh.FreeGPU{{UUID: "GPU-d", Milli: 250, VRAMBytes: 4 << 30}}}, 0)},
	}
	v := dashboardView{self: self, pool: "pool1", version: "v9", members: ms}
	got := v.Nodes()
	want := []dashboard.Node{
		{PeerID: self.String(), Name: "tower", State: "alive", Self: true, CPUCores: 8, GPUs: []dashboard.GPU{{
			UUID: "GPU-d", Name: "RTX 3060", VRAMTotalBytes: 12 << 30, Source: dashboard.SourceDeclared,
			Reserved: true, ReservedMilli: 750, ReservedVRAMBytes: 8 << 30,
		}}},
		{PeerID: other.String(), Name: "lab1", State: "suspect", CPUCores: 8, CPULoad1: 1.5, Models: 2, GPUs: []dashboard.GPU{{
			UUID: "GPU-n", Name: "RTX 4090", VRAMTotalBytes: 24 << 30, VRAMUsedBytes: 16 << 30, UtilizationPct: 70, Source: dashboard.SourceMeasured,
		}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Nodes() = %+v\nwant %+v", got, want)
	}
	if s := v.Self(); s != (dashboard.Self{PeerID: self.String(), Name: "tower", PoolID: "pool1", Version: "v9"}) {
		t.Errorf("Self() = %+v; want tower in pool1", s)
	}
}

func TestDashboardGPUReserved(t *testing.T) {
	g := hardware.GPU{UUID: "GPU-a", VRAMTotalBytes: 10 << 30, VRAMFreeBytes: 12 << 30, Source: hardware.SourceDeclared}
	cases := []struct {
		name      string
		free      *mesh.FreeCapacity
		reserved  bool
		milli     int64
		vramBytes uint64
	}{
		{"no announcement", nil, false, 0, 0},
		{"other card only", &mesh.FreeCapacity{GPUs: []mesh.FreeGPU{{UUID: "GPU-b", Milli: 0}}}, false, 0, 0},
		{"all free", &mesh.FreeCapacity{GPUs: []mesh.FreeGPU{{UUID: "GPU-a", Milli: 1000, VRAMBytes: 10 << 30}}}, true, 0, 0},
		{"oversold after the card shrank", &mesh.FreeCapacity{GPUs: []mesh.FreeGPU{{UUID: "GPU-a", Milli: -200, VRAMBytes: -1}}}, true, 1000, 10 << 30},
		{"more free than the card", &mesh.FreeCapacity{GPUs: []mesh.FreeGPU{{UUID: "GPU-a", Milli: 1200, VRAMBytes: 11 << 30}}}, true, 0, 0},
	}
	for _, c := range cases {
		got := dashboardGPU(g, c.free)
		if got.VRAMUsedBytes != 0 {
			t.Errorf("%s: used %d with more free than total; want 0", c.name, got.VRAMUsedBytes)
		}
		if got.Reserved != c.reserved || got.ReservedMilli != c.milli || got.ReservedVRAMBytes != c.vramBytes {
			t.Errorf("%s: dashboardGPU = reserved %v %d milli %d B; want %v %d %d", c.name,
				got.Reserved, got.ReservedMilli, got.ReservedVRAMBytes, c.reserved, c.milli, c.vramBytes)
		}
	}
}

func TestGPUMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, "v1")
	m.observe(hardware.Inventory{GPUs: []hardware.GPU{
		{Index: 0, UUID: "GPU-m", Name: "RTX 4090", VRAMTotalBytes: 24 << 30, VRAMFreeBytes: 20 << 30, UtilizationPct: 35, Source: hardware.SourceNVML},
		{Index: 1, UUID: "GPU-d", Name: "RTX 3060", VRAMTotalBytes: 12 << 30, VRAMFreeBytes: 12 << 30, Source: hardware.SourceDeclared},
	}})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Cards without distinct UUIDs (a malformed inventory) must not fail
	// the scrape.
	m.observe(hardware.Inventory{GPUs: []hardware.GPU{{}, {}}})
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather with two cards alike: %v; want the scrape to work", err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key] = mt.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"shoal_node_gpu_vram_total_bytes gpu=GPU-m index=0 name=RTX 4090 source=measured":  24 << 30,
		"shoal_node_gpu_vram_used_bytes gpu=GPU-m index=0 name=RTX 4090 source=measured":   4 << 30,
		"shoal_node_gpu_utilization_ratio gpu=GPU-m index=0 name=RTX 4090 source=measured": 0.35,
		"shoal_node_gpu_vram_total_bytes gpu=GPU-d index=1 name=RTX 3060 source=declared":  12 << 30,
		"shoal_node_gpu_vram_used_bytes gpu=GPU-d index=1 name=RTX 3060 source=declared":   0,
		"shoal_node_gpu_utilization_ratio gpu=GPU-d index=1 name=RTX 3060 source=declared": 0,
		"shoal_node_gpus": 2,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("metric %s = %v (present %v); want %v", k, g, ok, w)
		}
	}
}

// controlCredits reads GET /v1/credits over the control socket: a daemon
// without the endpoint is "not available", one with it gives its report.
func TestControlCredits(t *testing.T) {
	home, err := os.MkdirTemp("", "shoal-dash-") // short: a socket path is at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	src := controlCredits{client: NewClient(home)}
	if _, err := src.Credits(context.Background()); !errors.Is(err, dashboard.ErrUnavailable) {
		t.Errorf("Credits with no daemon = %v; want ErrUnavailable", err)
	}

	ln, err := net.Listen("unix", filepath.Join(home, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	want := market.Report{Pool: "pool1", Root: "ab", Receipts: 2, Accepted: 1, Rejected: 1,
		Identities: []market.IdentityReport{{Peer: testPeer(t, 3), Balance: 5, Earned: 5}}}
	var withCredits atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/credits", func(w http.ResponseWriter, r *http.Request) {
		if !withCredits.Load() {
			writeError(w, http.StatusNotFound, "no endpoint")
			return
		}
		writeJSON(w, http.StatusOK, want)
	})
	srv := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })

	if _, err := src.Credits(context.Background()); !errors.Is(err, dashboard.ErrUnavailable) {
		t.Errorf("Credits from a daemon without /v1/credits = %v; want ErrUnavailable", err)
	}
	withCredits.Store(true)
	got, err := src.Credits(context.Background())
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Credits = %+v, %v; want %+v", got, err, want)
	}
}
