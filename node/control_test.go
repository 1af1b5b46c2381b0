package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

type controlFixture struct {
	mesh   *fakeMesh
	srv    *controlServer
	leaves atomic.Int32
	self   mesh.Member
	a, b   mesh.Member
}

func newControlFixture(t *testing.T) *controlFixture {
	t.Helper()
	selfID, aID, bID := testPeer(t, 5), testPeer(t, 1), testPeer(t, 2)
	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	gpu := hardware.GPU{Index: 0, UUID: "GPU-1", Name: "RTX 4090", VRAMTotalBytes: 24 << 30, VRAMFreeBytes: 20 << 30,
		CUDACores: 16384, UtilizationPct: 3, Source: hardware.SourceNVML}
	f := &controlFixture{mesh: newFakeMesh(selfID)}
	f.self = mesh.Member{PeerID: selfID, State: mesh.StateAlive, Self: true, LastSeen: seen,
		Record: &mesh.Record{PeerID: selfID.String(), Name: "me", Addrs: []string{"/ip4/127.0.0.1/tcp/4242"}}}
	f.a = mesh.Member{PeerID: aID, State: mesh.StateAlive, LastSeen: seen,
		Record: &mesh.Record{PeerID: aID.String(), Name: "gpu-box", Version: "v1",
			Inventory: hardware.Inventory{GPUs: []hardware.GPU{gpu}, DriverVersion: "550.1", CUDAVersion: "12.4",
				Host: hardware.Host{OS: "linux", Arch: "amd64", CPUCores: 16}}},
		Load: mesh.Load{GPUUtilPct: []int{77}, VRAMFreeBytes: []uint64{10 << 30}}}
	f.b = mesh.Member{PeerID: bID, State: mesh.StateDead, LastSeen: seen} // no record yet
	// Unsorted on purpose: the API sorts.
	f.mesh.members = []mesh.Member{f.b, f.a, f.self}
	f.mesh.records[aID] = f.a.Record
	f.srv = &controlServer{
		mesh:          f.mesh,
		info:          controlInfo{Name: "me", Version: "v9", Home: "/h", StartedAt: seen, Resumed: true},
		mode:          func() string { return "declared" },
		ready:         func() bool { return true },
		leave:         func() { f.leaves.Add(1) },
		metrics:       prometheus.NewPedanticRegistry(),
		lookupTimeout: time.Second,
	}
	return f
}

func (f *controlFixture) do(t *testing.T, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	f.srv.handler().ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", w.Body.String(), err)
	}
	return v
}

func TestControlStatus(t *testing.T) {
	f := newControlFixture(t)
	w := f.do(t, "GET", "/v1/status")
	if w.Code != http.StatusOK {
		t.Fatalf("GET /v1/status = %d %s", w.Code, w.Body)
	}
	got := decode[Status](t, w)
	want := Status{
		PeerID: f.mesh.id.String(), PoolID: "fakepool", Name: "me", Version: "v9", Home: "/h",
		PID: got.PID, Addrs: []string{"/ip4/127.0.0.1/tcp/4242"}, StartedAt: f.srv.info.StartedAt,
		Ready: true, Resumed: true, Members: MemberCount{Alive: 2, Total: 3}, InventoryMode: "declared",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /v1/status = %+v; want %+v", got, want)
	}
	if got.PID <= 0 {
		t.Errorf("status pid = %d; want > 0", got.PID)
	}
}

func TestControlNodes(t *testing.T) {
	f := newControlFixture(t)
	w := f.do(t, "GET", "/v1/nodes")
	if w.Code != http.StatusOK {
		t.Fatalf("GET /v1/nodes = %d %s", w.Code, w.Body)
	}
	got := decode[[]Member](t, w)
	var ids []string
	for _, m := range got {
		ids = append(ids, m.PeerID)
	}
	// Self first, then by peer ID.
	wantIDs := []string{f.self.PeerID.String(), f.a.PeerID.String(), f.b.PeerID.String()}
	if f.a.PeerID.String() > f.b.PeerID.String() {
		wantIDs[1], wantIDs[2] = wantIDs[2], wantIDs[1]
	}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Errorf("GET /v1/nodes order = %v; want %v", ids, wantIDs)
	}
	byID := map[string]Member{}
	for _, m := range got {
		byID[m.PeerID] = m
	}
	a := byID[f.a.PeerID.String()]
	if a.Name != "gpu-box" || a.State != mesh.StateAlive || a.DriverVersion != "550.1" || a.CUDAVersion != "12.4" || a.Host.CPUCores != 16 {
		t.Errorf("member a = %+v; want name gpu-box, alive, driver 550.1, cuda 12.4, 16 cores", a)
	}
	if len(a.GPUs) != 1 {
		t.Fatalf("member a GPUs = %v; want 1", a.GPUs)
	}
	if g := a.GPUs[0]; g.VRAMFreeBytes != 10<<30 || g.UtilizationPct != 77 || g.UUID != "GPU-1" {
		t.Errorf("member a GPU = %+v; want free 10 GiB and util 77 from the heartbeat", g)
	}
	if f.a.Record.Inventory.GPUs[0].VRAMFreeBytes != 20<<30 {
		t.Error("overlaying the heartbeat changed the mesh's record")
	}
	b := byID[f.b.PeerID.String()]
	if b.State != mesh.StateDead || b.GPUs == nil || len(b.GPUs) != 0 || b.Addrs == nil {
		t.Errorf("member b = %+v; want dead with empty (not null) gpus and addrs", b)
	}
	if !byID[f.self.PeerID.String()].Self {
		t.Error("self member has self=false")
	}
	// The wire names the brief promises.
	var raw []map[string]any
	json.Unmarshal(w.Body.Bytes(), &raw)
	for _, k := range []string{"peer_id", "name", "state", "self", "addrs", "last_seen", "gpus", "host", "driver_version", "cuda_version"} {
		if _, ok := raw[1][k]; !ok {
			t.Errorf("/v1/nodes element lacks %q: %v", k, raw[1])
		}
	}
}

func TestControlToken(t *testing.T) {
	f := newControlFixture(t)
	w := f.do(t, "GET", "/v1/token")
	if got := decode[TokenResponse](t, w); w.Code != 200 || got.Token != "shoal1.faketoken" {
		t.Errorf("GET /v1/token = %d %+v; want 200 shoal1.faketoken", w.Code, got)
	}
}

func TestControlRecords(t *testing.T) {
	f := newControlFixture(t)
	aID := f.a.PeerID.String()
	tests := []struct {
		name      string
		path      string
		lookupErr error
		wantCode  int
		wantInErr string
	}{
		{"found", "/v1/records/" + aID, nil, 200, ""},
		{"found by prefix", "/v1/records/" + aID[:16], nil, 200, ""},
		{"found by the 12-char prefix shoal nodes shows", "/v1/records/" + aID[:12], nil, 200, ""},
		{"not in DHT", "/v1/records/" + f.b.PeerID.String(), nil, 404, "no record of peer"},
		{"bad peer ID", "/v1/records/not-a-peer", nil, 400, "not a peer ID"},
		{"ambiguous prefix", "/v1/records/12D3KooW", nil, 400, "matches"},
		{"lookup timeout", "/v1/records/" + aID, fmt.Errorf("dht: %w", context.DeadlineExceeded), 504, "took longer"},
		{"lookup failed", "/v1/records/" + aID, errors.New("dht: broken"), 502, "dht: broken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mesh.lookupErr = tt.lookupErr
			w := f.do(t, "GET", tt.path)
			if w.Code != tt.wantCode {
				t.Fatalf("GET %s = %d %s; want %d", tt.path, w.Code, w.Body, tt.wantCode)
			}
			if tt.wantCode == 200 {
				if got := decode[mesh.Record](t, w); got.Name != "gpu-box" {
					t.Errorf("GET %s = record %+v; want gpu-box", tt.path, got)
				}
				return
			}
			if got := decode[errorResponse](t, w); !strings.Contains(got.Error, tt.wantInErr) {
				t.Errorf("GET %s error = %q; want it to contain %q", tt.path, got.Error, tt.wantInErr)
			}
		})
	}
}

func TestControlLeave(t *testing.T) {
	f := newControlFixture(t)
	if w := f.do(t, "GET", "/v1/leave"); w.Code == http.StatusAccepted || f.leaves.Load() != 0 {
		t.Errorf("GET /v1/leave = %d, leaves %d; want refused, 0", w.Code, f.leaves.Load())
	}
	w := f.do(t, "POST", "/v1/leave")
	if w.Code != http.StatusAccepted {
		t.Fatalf("POST /v1/leave = %d %s; want 202", w.Code, w.Body)
	}
	if got := decode[LeaveResponse](t, w); got.PoolID != "fakepool" {
		t.Errorf("POST /v1/leave = %+v; want pool fakepool", got)
	}
	if got := f.leaves.Load(); got != 1 {
		t.Errorf("leave called %d times; want 1", got)
	}
}

func TestControlMetricsAndUnknown(t *testing.T) {
	f := newControlFixture(t)
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, "v9")
	m.observe(hardware.Inventory{GPUs: make([]hardware.GPU, 2)})
	f.srv.metrics = reg
	w := f.do(t, "GET", "/metrics")
	for _, want := range []string{"shoal_node_gpus 2", `shoal_node_info{version="v9"} 1`} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET /metrics lacks %q:\n%s", want, w.Body)
		}
	}
	w = f.do(t, "GET", "/v1/nope")
	if got := decode[errorResponse](t, w); w.Code != 404 || !strings.Contains(got.Error, "no endpoint") {
		t.Errorf("GET /v1/nope = %d %q; want 404 no endpoint", w.Code, got.Error)
	}
}
