package template

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/shoalmesh/shoal/runtime"
)

// APIVersion and Kind every template document carries.
const (
	APIVersion = "shoal/v1"
	Kind       = "Template"
)

// WorkloadKind says how a deployment's replicas live.
type WorkloadKind string

// Workload kinds.
const (
	Service WorkloadKind = "service" // long-running, scaled on traffic; answers HTTP on its port
	Job     WorkloadKind = "job"     // runs to completion once
	Gang    WorkloadKind = "gang"    // several members placed together, all or none
)

// Priority is the class a deployment's replicas run at; inference preempts
// batch.
type Priority string

// Priorities.
const (
	Inference Priority = "inference"
	Batch     Priority = "batch"
)

// Template is a parsed, validated template: its parameters, and its spec
// still holding ${parameter} references until Render.
type Template struct {
	Name        string  // metadata.name
	Description string  // metadata.description
	Parameters  []Param // in the order written
	// Version fills ${shoal.version} (e.g. the reference workload's image
	// tag); "dev" when empty. The built-in catalog sets the binary's version.
	Version string

	source []byte     // the YAML as written
	spec   *yaml.Node // spec, parameters not yet substituted
}

// Source returns the template's YAML as written.
func (t *Template) Source() []byte { return slices.Clone(t.source) }

// Spec is a rendered template: what to run and with what.
type Spec struct {
	Template string            `yaml:"-" json:"template"`
	Params   map[string]string `yaml:"-" json:"params"` // every parameter's value, defaults included

	Kind      WorkloadKind `yaml:"kind" json:"kind"`
	Priority  Priority     `yaml:"priority" json:"priority"`
	Resources Resources    `yaml:"resources" json:"resources"`
	Runtime   *Runtime     `yaml:"runtime" json:"runtime,omitempty"` // service and job
	Weights   *Weights     `yaml:"weights" json:"weights,omitempty"`
	Scaling   Scaling      `yaml:"scaling" json:"scaling"`
	Gang      *GangSpec    `yaml:"gang" json:"gang,omitempty"` // gang only
}

// Resources one replica (or one gang member) needs.
type Resources struct {
	GPUs        int      `yaml:"gpus" json:"gpus"`               // whole GPUs; 1 with a gpuFraction
	GPUFraction float64  `yaml:"gpuFraction" json:"gpuFraction"` // share of one GPU's memory, (0,1); 0: whole GPUs
	MinVRAM     Bytes    `yaml:"minVRAM" json:"minVRAM"`         // VRAM per GPU the workload needs at least
	Arch        []string `yaml:"arch" json:"arch,omitempty"`     // accepted GPU architectures (ampere, ada, hopper, ...); empty: any
	CPU         float64  `yaml:"cpu" json:"cpu"`                 // cores; 0: no limit
	Memory      Bytes    `yaml:"memory" json:"memory"`           // host memory; 0: no limit
}

// VRAMLimitMiB is the VRAM per GPU a replica holding a fraction of a card of
// totalBytes may use: the fraction of the card, at least MinVRAM. It is 0
// for whole cards (no limit is handed to the engine).
func (r Resources) VRAMLimitMiB(totalBytes uint64) int64 {
	if r.GPUFraction <= 0 || r.GPUFraction >= 1 {
		return 0
	}
	lim := int64(r.GPUFraction*float64(totalBytes)) >> 20
	return max(lim, r.MinVRAM.MiB())
}

// Runtime is how to start the workload.
type Runtime struct {
	Image        string            `yaml:"image" json:"image,omitempty"`           // container image (Docker backend)
	Entrypoint   []string          `yaml:"entrypoint" json:"entrypoint,omitempty"` // replaces the image's entrypoint (Docker backend)
	Command      []string          `yaml:"command" json:"command,omitempty"`       // program and leading arguments (process backend)
	Args         []string          `yaml:"args" json:"args,omitempty"`
	Env          map[string]string `yaml:"env" json:"env,omitempty"`
	Port         int               `yaml:"port" json:"port,omitempty"`     // port the workload listens on; 0: no HTTP endpoint
	Health       string            `yaml:"health" json:"health,omitempty"` // health path; default "/" with a port
	StartTimeout Duration          `yaml:"startTimeout" json:"startTimeout"`
}

// Weights names the model a replica needs and where it sees it.
type Weights struct {
	Model     string `yaml:"model" json:"model"`         // model name or ID in the weight cache
	MountPath string `yaml:"mountPath" json:"mountPath"` // where a container sees the model directory; default /models
}

// Scaling of a service.
type Scaling struct {
	MinReplicas       int      `yaml:"minReplicas" json:"minReplicas"`             // 0 allows scale to zero
	MaxReplicas       int      `yaml:"maxReplicas" json:"maxReplicas"`             // default 1
	TargetConcurrency int      `yaml:"targetConcurrency" json:"targetConcurrency"` // in-flight requests per replica before scaling up; default 4
	IdleTimeout       Duration `yaml:"idleTimeout" json:"idleTimeout"`             // without traffic this long, scale down; default 10m
	// Window is the autoscaler's stable window: the count follows the
	// average concurrency over it (longer rides out bursts, shorter scales
	// down sooner); a burst is judged over a tenth of it. Default 60s.
	Window Duration `yaml:"window" json:"window,omitempty"`
}

// GangSpec describes the members of a gang, placed all or none.
type GangSpec struct {
	// Placement: best-connected (fewest, fastest links between members;
	// the default) or spread (one member per node).
	Placement string `yaml:"placement" json:"placement"`
	// Split: how a model is split across members; "vram" splits layers in
	// proportion to each member's free VRAM (${shoal.gang.tensorSplit}),
	// "" does not split.
	Split string `yaml:"split" json:"split,omitempty"`
	Roles []Role `yaml:"roles" json:"roles"`
}

// Role is a group of identical gang members.
type Role struct {
	Name      string     `yaml:"name" json:"name"`
	Count     int        `yaml:"count" json:"count"`
	Resources *Resources `yaml:"resources" json:"resources,omitempty"` // default: the spec's resources
	Runtime   Runtime    `yaml:"runtime" json:"runtime"`
}

// Gang placeholders the coordinator fills for each member, beside
// runtime.Placeholders; "peers.ROLE" names the members of a role.
var GangPlaceholders = map[string]string{
	"gang.rank":        "this member's rank, 0 to size-1",
	"gang.size":        "how many members the gang has",
	"gang.leader":      "host:port of the member of rank 0",
	"gang.peers.ROLE":  "host:port of every member of ROLE, comma-separated, in rank order",
	"gang.tensorSplit": "each peer's share of the model (its free VRAM), comma-separated, in the order of the peers",
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	refRE  = regexp.MustCompile(`\$(\$?)\{([^}]*)\}`)
)

// header is the part of a template document around the spec.
type header struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Metadata   metadata  `yaml:"metadata"`
	Parameters []Param   `yaml:"parameters"`
	Spec       yaml.Node `yaml:"-"`
}

type metadata struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
}

// Parse reads one template document and validates it: its structure, its
// parameters, and its spec rendered with every default (and a stand-in for
// each required parameter). Errors are *Error naming the field and line.
func Parse(data []byte) (*Template, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{Err: fmt.Errorf("%w: %v", ErrSyntax, err)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &Error{Err: fmt.Errorf("%w: empty document", ErrRequired)}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, errAt(root, "", ErrType, "a template is a mapping with apiVersion, kind, metadata, parameters and spec")
	}
	var h header
	_, specNode := mapValue(root, "spec")
	// Decode everything but spec strictly; spec is decoded after
	// substitution.
	rest := &yaml.Node{Kind: yaml.MappingNode, Line: root.Line, Column: root.Column}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "spec" {
			rest.Content = append(rest.Content, root.Content[i], root.Content[i+1])
		}
	}
	_, nameNode := mapValue(root, "metadata")
	_, nameNode = mapValue(nameNode, "name")
	tname := ""
	if nameNode != nil {
		tname = nameNode.Value
	}
	fail := func(err error) (*Template, error) {
		if e, ok := err.(*Error); ok && e.Template == "" {
			e.Template = tname
		}
		return nil, err
	}
	if err := decodeStrict(rest, &h, ""); err != nil {
		return fail(err)
	}
	if h.APIVersion != APIVersion {
		k, _ := mapValue(root, "apiVersion")
		return fail(errAt(orNode(k, root), "apiVersion", ErrValue, "want %q, got %q", APIVersion, h.APIVersion))
	}
	if h.Kind != Kind {
		k, _ := mapValue(root, "kind")
		return fail(errAt(orNode(k, root), "kind", ErrValue, "want %q, got %q", Kind, h.Kind))
	}
	if !nameRE.MatchString(h.Metadata.Name) {
		return fail(errAt(orNode(nameNode, root), "metadata.name", ErrValue, "%q: want lowercase letters, digits and dashes", h.Metadata.Name))
	}
	if specNode == nil {
		return fail(errAt(root, "spec", ErrRequired, "a template needs a spec"))
	}
	_, paramsNode := mapValue(root, "parameters")
	seen := map[string]bool{}
	for i := range h.Parameters {
		var pn *yaml.Node
		if paramsNode != nil && i < len(paramsNode.Content) {
			pn = paramsNode.Content[i]
		}
		p := &h.Parameters[i]
		if err := p.validate(pn, fmt.Sprintf("parameters[%d]", i)); err != nil {
			return fail(err)
		}
		if seen[p.Name] {
			return fail(errAt(pn, fmt.Sprintf("parameters[%d].name", i), ErrValue, "parameter %q declared twice", p.Name))
		}
		seen[p.Name] = true
	}
	t := &Template{
		Name:        h.Metadata.Name,
		Description: h.Metadata.Description,
		Parameters:  h.Parameters,
		source:      slices.Clone(data),
		spec:        specNode,
	}
	// Every reference must name a parameter or a known placeholder.
	if err := walkScalars(specNode, "spec", func(n *yaml.Node, path string) error {
		for _, m := range refRE.FindAllStringSubmatch(n.Value, -1) {
			if m[1] == "$" {
				continue // $${...} is a literal ${...}
			}
			if !t.knownRef(m[2]) {
				return errAt(n, path, ErrUnknownParam, "${%s} is neither a parameter (%s) nor a ${shoal.*} placeholder (%s)",
					m[2], t.paramNames(), strings.Join(placeholderNames(), ", "))
			}
		}
		return nil
	}); err != nil {
		return fail(err)
	}
	if _, err := t.Render(t.standIns()); err != nil {
		return fail(err)
	}
	return t, nil
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

func (t *Template) knownRef(name string) bool {
	if t.param(name) != nil || name == "shoal.version" {
		return true
	}
	sub, ok := strings.CutPrefix(name, "shoal.")
	if !ok {
		return false
	}
	if _, ok := runtime.Placeholders[sub]; ok {
		return true
	}
	if _, ok := GangPlaceholders[sub]; ok {
		return true
	}
	role, ok := strings.CutPrefix(sub, "gang.peers.")
	return ok && role != "" && role != "ROLE"
}

func placeholderNames() []string {
	var out []string
	for k := range maps.Keys(runtime.Placeholders) {
		out = append(out, "shoal."+k)
	}
	for k := range maps.Keys(GangPlaceholders) {
		out = append(out, "shoal."+k)
	}
	out = append(out, "shoal.version")
	slices.Sort(out)
	return out
}

func (t *Template) param(name string) *Param {
	for i := range t.Parameters {
		if t.Parameters[i].Name == name {
			return &t.Parameters[i]
		}
	}
	return nil
}

func (t *Template) paramNames() string {
	if len(t.Parameters) == 0 {
		return "this template has none"
	}
	names := make([]string, len(t.Parameters))
	for i, p := range t.Parameters {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

// walkScalars calls f on every scalar value (not mapping keys) under n.
func walkScalars(n *yaml.Node, path string, f func(*yaml.Node, string) error) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return f(n, path)
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := walkScalars(c, fmt.Sprintf("%s[%d]", path, i), f); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := walkScalars(n.Content[i+1], path+"."+n.Content[i].Value, f); err != nil {
				return err
			}
		}
	case yaml.AliasNode:
		return errAt(n, path, ErrValue, "YAML aliases are not supported")
	}
	return nil
}

// cloneNode deep-copies n.
func cloneNode(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, x := range n.Content {
		c.Content[i] = cloneNode(x)
	}
	return &c
}

// Render substitutes parameter values (as `--set name=value` gives them)
// into the spec, decodes and validates it. Missing values take their
// defaults; an unknown parameter, a value of the wrong type or outside the
// enum, or a missing required parameter is an *Error naming the parameter.
//
// Substitution: ${name} is replaced by the parameter's value; $${ writes a
// literal ${. ${shoal.version} becomes t.Version; other ${shoal.*}
// placeholders stay for the backend (runtime.Expand) or the gang
// coordinator to fill.
func (t *Template) Render(values map[string]string) (*Spec, error) {
	params, err := t.resolve(values)
	if err != nil {
		return nil, err
	}
	version := t.Version
	if version == "" {
		version = "dev"
	}
	n := cloneNode(t.spec)
	walkScalars(n, "spec", func(n *yaml.Node, _ string) error {
		n.Value = refRE.ReplaceAllStringFunc(n.Value, func(m string) string {
			sm := refRE.FindStringSubmatch(m)
			switch {
			case sm[1] == "$":
				return "${" + sm[2] + "}"
			case sm[2] == "shoal.version":
				return version
			}
			if v, ok := params[sm[2]]; ok {
				return v
			}
			return m
		})
		return nil
	})
	s := &Spec{Template: t.Name, Params: params}
	if err := decodeStrict(n, s, "spec"); err != nil {
		err.(*Error).Template = t.Name
		return nil, err
	}
	if err := s.validate(n); err != nil {
		err.Template = t.Name
		return nil, err
	}
	return s, nil
}

// ReplicaSpec is what a backend runs for one replica of a service or job
// (role "") or one member of a gang's role. The caller adds what its
// reservation decided: GPU UUIDs, VRAM limit, model directory, and, for a
// gang, the gang placeholders in Vars.
func (s *Spec) ReplicaSpec(role, replicaID, deployment string) (runtime.Spec, error) {
	rt, res := s.Runtime, s.Resources
	if s.Kind == Gang {
		rt = nil
		for i := range s.Gang.Roles {
			if r := &s.Gang.Roles[i]; r.Name == role {
				rt = &r.Runtime
				if r.Resources != nil {
					res = *r.Resources
				}
			}
		}
		if rt == nil {
			return runtime.Spec{}, fmt.Errorf("%w: gang %s has no role %q", ErrValue, s.Template, role)
		}
	} else if role != "" {
		return runtime.Spec{}, fmt.Errorf("%w: %s is a %s, not a gang; it has no role %q", ErrValue, s.Template, s.Kind, role)
	}
	out := runtime.Spec{
		ReplicaID:    replicaID,
		Deployment:   deployment,
		Image:        rt.Image,
		Entrypoint:   slices.Clone(rt.Entrypoint),
		Command:      slices.Clone(rt.Command),
		Args:         slices.Clone(rt.Args),
		Env:          maps.Clone(rt.Env),
		Port:         rt.Port,
		HealthPath:   rt.Health,
		StartTimeout: timeDuration(rt.StartTimeout),
		GPUFraction:  res.GPUFraction,
		NanoCPUs:     int64(res.CPU * 1e9),
		MemoryBytes:  int64(res.Memory),
	}
	if s.Weights != nil {
		out.ModelMountPath = s.Weights.MountPath
	}
	return out, nil
}
