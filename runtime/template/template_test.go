package template_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/template"
)

const base = `apiVersion: shoal/v1
kind: Template
metadata:
  name: demo
parameters:
  - name: model
    required: true
  - name: replicas
    type: int
    default: "2"
  - name: mode
    type: enum
    enum: [fast, slow]
    default: fast
spec:
  runtime:
    image: demo:1
    args:
      - --mode
      - ${mode}
    port: 8000
  weights:
    model: ${model}
  scaling:
    maxReplicas: ${replicas}
`

func TestParseRejectsWithFieldAndLine(t *testing.T) {
	tests := []struct {
		name     string
		old, new string // replaced in base
		want     error
		line     int
		field    string
	}{
		{"unknown field", "    port: 8000", "    prot: 8000", template.ErrUnknownField, 21, "spec.runtime.prot"},
		{"bad type", "    port: 8000", "    port: eighty", template.ErrType, 21, "spec.runtime.port"},
		{"list for scalar", "    image: demo:1", "    image: [a, b]", template.ErrType, 17, "spec.runtime.image"},
		{"unknown top field", "kind: Template", "kind: Template\nextra: 1", template.ErrUnknownField, 3, "extra"},
		{"wrong apiVersion", "shoal/v1", "shoal/v2", template.ErrValue, 1, "apiVersion"},
		{"bad default type", `default: "2"`, `default: two`, template.ErrType, 10, "parameters[1].default"},
		{"default outside enum", "default: fast", "default: medium", template.ErrType, 14, "parameters[2].default"},
		{"bad param type", "type: int", "type: integer", template.ErrValue, 9, "parameters[1].type"},
		{"undeclared reference", "${mode}", "${speed}", template.ErrUnknownParam, 20, "spec.runtime.args[1]"},
		{"unknown placeholder", "${mode}", "${shoal.nope}", template.ErrUnknownParam, 20, "spec.runtime.args[1]"},
		{"no runtime", "  runtime:\n    image: demo:1\n    args:\n      - --mode\n      - ${mode}\n    port: 8000\n", "", template.ErrRequired, 16, "spec.runtime"},
		{"bad kind", "spec:\n", "spec:\n  kind: daemon\n", template.ErrValue, 16, "spec.kind"},
		{"bad fraction", "spec:\n", "spec:\n  resources:\n    gpuFraction: 1.5\n", template.ErrValue, 17, "spec.resources.gpuFraction"},
		{"bad size", "spec:\n", "spec:\n  resources:\n    gpus: 1\n    minVRAM: lots\n", template.ErrType, 18, "spec.resources.minVRAM"},
		{"syntax", "  name: demo", "  name: [demo", template.ErrSyntax, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(base, tt.old, tt.new, 1)
			if src == base {
				t.Fatalf("replacement %q not in base", tt.old)
			}
			_, err := template.Parse([]byte(src))
			var te *template.Error
			if !errors.As(err, &te) || !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v; want *Error wrapping %v", err, tt.want)
			}
			if te.Line != tt.line || te.Field != tt.field {
				t.Fatalf("Parse = %v (line %d, field %q); want line %d, field %q", err, te.Line, te.Field, tt.line, tt.field)
			}
			if tt.line > 0 && !strings.Contains(err.Error(), fmt.Sprintf("line %d", tt.line)) {
				t.Errorf("message %q does not name the line", err)
			}
		})
	}
}

func TestRenderChecksParameters(t *testing.T) {
	tp, err := template.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  map[string]string
		want error
		says string
	}{
		{"unknown", map[string]string{"model": "m", "modle": "x"}, template.ErrUnknownParam, "parameters: model, replicas, mode"},
		{"missing required", nil, template.ErrRequired, "--set model="},
		{"bad int", map[string]string{"model": "m", "replicas": "many"}, template.ErrType, "replicas is an int"},
		{"bad enum", map[string]string{"model": "m", "mode": "medium"}, template.ErrValue, "one of fast, slow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tp.Render(tt.set)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Render(%v) = %v; want %v saying %q", tt.set, err, tt.want, tt.says)
			}
		})
	}
	s, err := tp.Render(map[string]string{"model": "Qwen/Qwen2.5-7B", "mode": "slow", "replicas": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Weights.Model != "Qwen/Qwen2.5-7B" || s.Scaling.MaxReplicas != 3 || s.Runtime.Args[1] != "slow" {
		t.Fatalf("Render = %+v; want parameters substituted", s)
	}
	if s.Kind != template.Service || s.Priority != template.Inference || s.Runtime.Health != "/" || s.Weights.MountPath != "/models" {
		t.Fatalf("Render = %+v; want defaults filled", s)
	}
}

func TestSubstitutionEscapesAndTypes(t *testing.T) {
	src := strings.Replace(base, "      - ${mode}\n", "      - ${mode}\n      - $${literal}\n      - pre-${replicas}-post\n", 1)
	tp, err := template.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s, err := tp.Render(map[string]string{"model": "true"}) // a model named "true" stays a string
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Runtime.Args; got[2] != "${literal}" || got[3] != "pre-2-post" || s.Weights.Model != "true" {
		t.Fatalf("args %q, model %q", got, s.Weights.Model)
	}
}

func builtin(t *testing.T) *template.Catalog {
	t.Helper()
	c, err := template.Builtin("v9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBuiltinCatalogRendersWithDefaults(t *testing.T) {
	c := builtin(t)
	want := []string{"comfyui", "llama-cpp", "llama-cpp-split", "lora-finetune", "ollama", "pytorch-ddp", "ray-worker", "reference", "sglang", "speaches", "vllm"}
	if got := c.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Names = %v; want %v", got, want)
	}
	for _, tp := range c.List() {
		t.Run(tp.Name, func(t *testing.T) {
			set := map[string]string{}
			for _, p := range tp.Parameters {
				if p.Required {
					set[p.Name] = "x"
				}
			}
			s, err := tp.Render(set)
			if err != nil {
				t.Fatal(err)
			}
			if tp.Description == "" {
				t.Error("no description")
			}
			// Every role renders to a replica spec whose placeholders a
			// backend (plus the gang's vars) can expand.
			roles := []string{""}
			if s.Kind == template.Gang {
				roles = nil
				for _, r := range s.Gang.Roles {
					roles = append(roles, r.Name)
				}
			}
			vars := map[string]string{"gang.rank": "0", "gang.size": "2", "gang.leader": "h:1", "gang.peers.worker": "h:2", "gang.tensorSplit": "1,1"}
			for _, role := range roles {
				rs, err := s.ReplicaSpec(role, "r-1", "dep")
				if err != nil {
					t.Fatal(err)
				}
				rs.Vars = vars
				if err := rs.Validate(); err != nil {
					t.Fatalf("role %q: %v", role, err)
				}
				vals := map[string]string{}
				for k := range runtime.Placeholders {
					vals[k] = "v"
				}
				for k, v := range vars {
					vals[k] = v
				}
				for _, a := range append(append([]string{}, rs.Args...), mapValues(rs.Env)...) {
					if _, err := runtime.Expand(a, vals); err != nil {
						t.Errorf("role %q: %v", role, err)
					}
				}
			}
		})
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestReferenceTemplate(t *testing.T) {
	tp, err := builtin(t).Get("reference")
	if err != nil {
		t.Fatal(err)
	}
	s, err := tp.Render(map[string]string{"model": "tiny-reference"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Runtime.Image != "shoal-reference:v9.9.9" || s.Runtime.Command[0] != "shoal-reference" || s.Weights.Model != "tiny-reference" {
		t.Fatalf("reference renders %+v / %+v", s.Runtime, s.Weights)
	}
	if _, err := builtin(t).Get("vlm"); !errors.Is(err, template.ErrUnknownTemplate) || !strings.Contains(err.Error(), "vllm") {
		t.Fatalf("Get(vlm) = %v; want ErrUnknownTemplate listing vllm", err)
	}
}

func TestVRAMLimit(t *testing.T) {
	r := template.Resources{GPUs: 1, GPUFraction: 0.25, MinVRAM: 8 << 30}
	if got := r.VRAMLimitMiB(24 << 30); got != 8192 {
		t.Errorf("VRAMLimitMiB(24GiB) = %d; want 8192 (minVRAM beats a quarter)", got)
	}
	if got := r.VRAMLimitMiB(80 << 30); got != 20480 {
		t.Errorf("VRAMLimitMiB(80GiB) = %d; want 20480", got)
	}
	if got := (template.Resources{GPUs: 1}).VRAMLimitMiB(24 << 30); got != 0 {
		t.Errorf("whole card: %d; want 0", got)
	}
}

func TestParseSets(t *testing.T) {
	got, err := template.ParseSets([]string{"model=Qwen/Qwen2.5=7B", "n=2"})
	if err != nil || got["model"] != "Qwen/Qwen2.5=7B" || got["n"] != "2" {
		t.Fatalf("ParseSets = %v, %v", got, err)
	}
	if _, err := template.ParseSets([]string{"model"}); !errors.Is(err, template.ErrValue) {
		t.Fatalf("ParseSets(model) = %v; want ErrValue", err)
	}
}

func FuzzParseTemplate(f *testing.F) {
	f.Add([]byte(base))
	c, err := template.Builtin("dev")
	if err != nil {
		f.Fatal(err)
	}
	for _, tp := range c.List() {
		f.Add(tp.Source())
	}
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("spec: {runtime: {image: ${x}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tp, err := template.Parse(data)
		if err != nil {
			var te *template.Error
			if !errors.As(err, &te) {
				t.Fatalf("Parse error %v is not a *template.Error", err)
			}
			return
		}
		// A template that parses renders with its required parameters set.
		set := map[string]string{}
		for _, p := range tp.Parameters {
			if p.Required {
				switch {
				case len(p.Enum) > 0:
					set[p.Name] = p.Enum[0]
				case p.Type == template.Int || p.Type == template.Float:
					set[p.Name] = "1"
				case p.Type == template.Bool:
					set[p.Name] = "true"
				default:
					set[p.Name] = "example"
				}
			}
		}
		if _, err := tp.Render(set); err != nil {
			t.Fatalf("parsed template does not render with stand-ins: %v", err)
		}
	})
}
