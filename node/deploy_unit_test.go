package node

import (
	"io"
	"log/slog"
	"testing"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/runtime/template"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

func TestRequestOfTemplate(t *testing.T) {
	cat, err := template.Builtin("test")
	if err != nil {
		t.Fatal(err)
	}
	render := func(name string, params map[string]string) *template.Spec {
		tp, err := cat.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tp.Render(params)
		if err != nil {
			t.Fatalf("render %s: %v", name, err)
		}
		return s
	}
	ollama := render("ollama", map[string]string{"model": "m"})
	ref := render("reference", map[string]string{"model": "m"})
	tests := []struct {
		name     string
		spec     *template.Spec
		replicas int
		check    func(r scheduler.Request) bool
	}{
		{"ollama: one whole GPU of at least 6 GiB", ollama, 0, func(r scheduler.Request) bool {
			return r.GPUs == 1 && r.MilliGPU == 0 && r.MinVRAM == 6<<30 && r.CPUMilli == 2000 && r.Replicas == 1 && r.Class == scheduler.Inference && r.ModelID == "m"
		}},
		{"reference: CPU only, --replicas 3", ref, 3, func(r scheduler.Request) bool {
			return r.GPUs == 0 && r.MinVRAM == 0 && r.CPUMilli == 500 && r.MemoryBytes == 128<<20 && r.Replicas == 3
		}},
		{"a fraction takes its share and minVRAM", &template.Spec{Kind: template.Job, Resources: template.Resources{GPUs: 1, GPUFraction: 0.25, MinVRAM: 6 << 30}}, 0, func(r scheduler.Request) bool {
			return r.GPUs == 1 && r.MilliGPU == 250 && r.VRAM == 6<<30 && r.MinVRAM == 6<<30 && r.Class == scheduler.Batch
		}},
		{"a gang places the sum of its roles", &template.Spec{Kind: template.Gang, Resources: template.Resources{GPUs: 1}, Gang: &template.GangSpec{Roles: []template.Role{{Name: "a", Count: 1}, {Name: "b", Count: 3}}}}, 7, func(r scheduler.Request) bool {
			return r.Gang && r.Replicas == 4 && r.GPUs == 1
		}},
	}
	for _, tt := range tests {
		r, err := requestOf(tt.spec, tt.replicas)
		if err != nil || !tt.check(r) {
			t.Errorf("%s: requestOf = %+v, %v", tt.name, r, err)
		}
	}
}

func TestDeploymentRecordsPersist(t *testing.T) {
	home := t.TempDir()
	newSvc := func() *deployService {
		return &deployService{cfg: deployConfig{Home: home}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: coordinator.NewStore("me")}
	}
	a := newSvc()
	a.mu.Lock()
	a.store.Put("web", coordinator.Spec{Name: "web", Request: scheduler.Request{Replicas: 2}})
	a.dirty = true
	a.mu.Unlock()
	a.saveRecords()
	b := newSvc()
	b.loadRecords()
	r, ok := b.store.Get("web")
	if !ok || r.Spec.Request.Replicas != 2 {
		t.Fatalf("after reload: %+v, %v; want web with 2 replicas", r, ok)
	}
	if w := b.store.Put("x", coordinator.Spec{Name: "x"}); !r.SpecVersion.Less(w.SpecVersion) {
		t.Errorf("a write after reload has version %v, not above the saved %v", w.SpecVersion, r.SpecVersion)
	}
}

func TestNodePrice(t *testing.T) {
	p := mesh.Price{PerGPUHour: 2, Models: map[string]float64{"RTX 4090": 36}}
	g := func(names ...string) []hardware.GPU {
		var out []hardware.GPU
		for _, n := range names {
			out = append(out, hardware.GPU{Name: n})
		}
		return out
	}
	for _, c := range []struct {
		gpus []hardware.GPU
		want float64
	}{
		{nil, 2},
		{g("A100 80GB"), 2},
		{g("RTX 4090"), 36},
		{g("A100 80GB", "RTX 4090"), 36},
	} {
		if got := nodePrice(p, c.gpus); got != c.want {
			t.Errorf("nodePrice(%v) = %g; want %g", c.gpus, got, c.want)
		}
	}
}

func TestMeshPrice(t *testing.T) {
	var pl market.PriceList
	for _, v := range []string{"0.5", "RTX 4090=36"} {
		if err := pl.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	got := meshPrice(pl)
	if got.PerGPUHour != 0.5 || got.Models["RTX 4090"] != 36 || len(got.Models) != 1 {
		t.Errorf("meshPrice(%+v) = %+v; want 0.5 by default and 36 for RTX 4090", pl, got)
	}
}
