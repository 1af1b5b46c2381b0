package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

func TestDeployUsageErrors(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"deploy"}, "needs a template name"},
		{[]string{"deploy", "vllm", "-f", "x.yaml"}, "not both"},
		{[]string{"deploy", "a", "b"}, "one template name"},
		{[]string{"deploy", "vllm", "--set", "novalue"}, "novalue"},
		{[]string{"deploy", "vllm", "--replicas", "-1"}, "negative"},
		{[]string{"rm"}, "a deployment name"},
		{[]string{"ps", "x"}, "no arguments"},
	}
	for _, tt := range tests {
		code, _, stderr := shoal(t, append([]string{"--home", home}, tt.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("shoal %v = %d, %q; want exit %d mentioning %q", tt.args, code, stderr, exitUsage, tt.want)
		}
	}
}

func TestWritePS(t *testing.T) {
	ds := []node.Deployment{
		{Record: coordinator.Record{ID: "web", Spec: coordinator.Spec{Request: scheduler.Request{Replicas: 2}},
			Status: coordinator.Status{State: coordinator.StateQueued, Reason: "not enough free GPU share", Closest: "12D3KooWclosestnode", Coordinator: "12D3KooWcoordinator",
				Replicas: []coordinator.ReplicaStatus{{ID: "web/000187a2c3f4aaaa-0001-abc", State: "placed",
					Slots: []scheduler.Slot{{Node: "12D3KooWnodeA", GPUs: []scheduler.GPUShare{{UUID: "GPU-1", Milli: 500}}}}}}}}},
		{Record: coordinator.Record{ID: "big", Status: coordinator.Status{State: coordinator.StateFailed, Reason: "GPU memory too small"}}},
	}
	var b bytes.Buffer
	if err := writePS(&b, ds); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"web", "queued", "1/2", "12D3KooWnode", "GPU-1:500", "[closest 12D3KooWclos]", "big", "failed", "0/1", "GPU memory too small"} {
		if !strings.Contains(out, want) {
			t.Errorf("ps table lacks %q:\n%s", want, out)
		}
	}
}
