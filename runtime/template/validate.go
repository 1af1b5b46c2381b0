package template

import (
	"fmt"
	"path"
	"strings"

	"gopkg.in/yaml.v3"
)

// Defaults of a rendered spec.
const (
	defaultStartTimeout      = Duration(10 * 60 * 1e9) // 10m: large models load slowly
	defaultTargetConcurrency = 4
	defaultIdleTimeout       = Duration(10 * 60 * 1e9) // 10m
	defaultWindow            = Duration(60 * 1e9)      // 1m, as Knative's
	defaultMountPath         = "/models"
)

// validate fills defaults and rejects nonsense; n is the rendered spec node,
// for line numbers.
func (s *Spec) validate(n *yaml.Node) *Error {
	at := func(p string) *yaml.Node { return nodeAt(n, p) }
	bad := func(p string, sentinel error, format string, args ...any) *Error {
		return errAt(at(p), "spec."+p, sentinel, format, args...)
	}
	if s.Kind == "" {
		s.Kind = Service
	}
	switch s.Kind {
	case Service, Job, Gang:
	default:
		return bad("kind", ErrValue, "%q: want service, job or gang", s.Kind)
	}
	if s.Priority == "" {
		s.Priority = Inference
		if s.Kind != Service {
			s.Priority = Batch
		}
	}
	if s.Priority != Inference && s.Priority != Batch {
		return bad("priority", ErrValue, "%q: want inference or batch", s.Priority)
	}
	if err := s.Resources.validate("resources", bad); err != nil {
		return err
	}
	if s.Weights != nil {
		if s.Weights.Model == "" {
			return bad("weights.model", ErrRequired, "name the model (a name or ID in the weight cache)")
		}
		if s.Weights.MountPath == "" {
			s.Weights.MountPath = defaultMountPath
		}
		if !path.IsAbs(s.Weights.MountPath) || path.Clean(s.Weights.MountPath) != s.Weights.MountPath {
			return bad("weights.mountPath", ErrValue, "%q: want a clean absolute path", s.Weights.MountPath)
		}
	}
	switch s.Kind {
	case Gang:
		if s.Runtime != nil {
			return bad("runtime", ErrValue, "a gang's runtime sits in each of gang.roles")
		}
		if s.Gang == nil || len(s.Gang.Roles) == 0 {
			return bad("gang", ErrRequired, "a gang needs gang.roles")
		}
		if s.Gang.Placement == "" {
			s.Gang.Placement = "best-connected"
		}
		if s.Gang.Placement != "best-connected" && s.Gang.Placement != "spread" {
			return bad("gang.placement", ErrValue, "%q: want best-connected or spread", s.Gang.Placement)
		}
		if s.Gang.Split != "" && s.Gang.Split != "vram" {
			return bad("gang.split", ErrValue, "%q: want vram or nothing", s.Gang.Split)
		}
		names := map[string]bool{}
		for i := range s.Gang.Roles {
			r := &s.Gang.Roles[i]
			p := fmt.Sprintf("gang.roles[%d]", i)
			if !nameRE.MatchString(r.Name) || names[r.Name] {
				return bad(p+".name", ErrValue, "%q: want a unique lowercase name", r.Name)
			}
			names[r.Name] = true
			if r.Count < 1 {
				return bad(p+".count", ErrValue, "want at least 1 member, got %d", r.Count)
			}
			if r.Resources != nil {
				if err := r.Resources.validate(p+".resources", bad); err != nil {
					return err
				}
			}
			if err := r.Runtime.validate(p+".runtime", false, bad); err != nil {
				return err
			}
		}
	default:
		if s.Gang != nil {
			return bad("gang", ErrValue, "only a gang has gang roles")
		}
		if s.Runtime == nil {
			return bad("runtime", ErrRequired, "say how to start the workload (image or command)")
		}
		if err := s.Runtime.validate("runtime", s.Kind == Service, bad); err != nil {
			return err
		}
	}
	sc := &s.Scaling
	if sc.MaxReplicas == 0 {
		sc.MaxReplicas = max(1, sc.MinReplicas)
	}
	if sc.TargetConcurrency == 0 {
		sc.TargetConcurrency = defaultTargetConcurrency
	}
	if sc.IdleTimeout == 0 {
		sc.IdleTimeout = defaultIdleTimeout
	}
	if sc.Window == 0 {
		sc.Window = defaultWindow
	}
	switch {
	case sc.Window < Duration(1e9):
		return bad("scaling.window", ErrValue, "want 1s or more, got %v", timeDuration(sc.Window))
	case sc.MinReplicas < 0:
		return bad("scaling.minReplicas", ErrValue, "want 0 or more, got %d", sc.MinReplicas)
	case sc.MaxReplicas < sc.MinReplicas:
		return bad("scaling.maxReplicas", ErrValue, "%d is below minReplicas %d", sc.MaxReplicas, sc.MinReplicas)
	case sc.TargetConcurrency < 0:
		return bad("scaling.targetConcurrency", ErrValue, "want 1 or more, got %d", sc.TargetConcurrency)
	case s.Kind != Service && (sc.MinReplicas > 1 || sc.MaxReplicas > 1):
		return bad("scaling", ErrValue, "a %s runs once; scaling is for services", s.Kind)
	}
	return nil
}

type badFunc func(p string, sentinel error, format string, args ...any) *Error

func (r *Resources) validate(p string, bad badFunc) *Error {
	switch {
	case r.GPUs < 0:
		return bad(p+".gpus", ErrValue, "want 0 or more, got %d", r.GPUs)
	case r.GPUFraction < 0 || r.GPUFraction >= 1:
		return bad(p+".gpuFraction", ErrValue, "want a share of one GPU in (0,1), got %v", r.GPUFraction)
	case r.GPUFraction > 0 && r.GPUs > 1:
		return bad(p+".gpuFraction", ErrValue, "a fraction is of one GPU; gpus is %d", r.GPUs)
	case r.CPU < 0:
		return bad(p+".cpu", ErrValue, "want 0 or more cores, got %v", r.CPU)
	case r.MinVRAM > 0 && r.GPUs == 0 && r.GPUFraction == 0:
		return bad(p+".minVRAM", ErrValue, "minVRAM without gpus or gpuFraction")
	}
	if r.GPUFraction > 0 {
		r.GPUs = 1
	}
	for i, a := range r.Arch {
		if a == "" || strings.ToLower(a) != a {
			return bad(fmt.Sprintf("%s.arch[%d]", p, i), ErrValue, "%q: want a lowercase architecture name (ampere, ada, hopper, ...)", a)
		}
	}
	return nil
}

func (rt *Runtime) validate(p string, service bool, bad badFunc) *Error {
	if rt.Image == "" && len(rt.Command) == 0 {
		return bad(p, ErrRequired, "set image (Docker) or command (process), or both")
	}
	if rt.Port < 0 || rt.Port > 65535 {
		return bad(p+".port", ErrValue, "%d: want 1-65535", rt.Port)
	}
	if service && rt.Port == 0 && rt.Health != "" {
		return bad(p+".health", ErrValue, "a health path needs a port")
	}
	if rt.Port > 0 && rt.Health == "" {
		rt.Health = "/"
	}
	if rt.Health != "" && !strings.HasPrefix(rt.Health, "/") {
		return bad(p+".health", ErrValue, "%q: want a path starting with /", rt.Health)
	}
	if rt.StartTimeout == 0 {
		rt.StartTimeout = defaultStartTimeout
	}
	for k := range rt.Env {
		if k == "" || strings.ContainsAny(k, "= \t\n") {
			return bad(p+".env", ErrValue, "%q is not an environment variable name", k)
		}
	}
	return nil
}

// nodeAt finds the node at a dotted path like gang.roles[1].runtime.port,
// or the nearest existing ancestor, for its line.
func nodeAt(n *yaml.Node, p string) *yaml.Node {
	cur := n
	for _, part := range strings.Split(p, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			name = part[:i]
			fmt.Sscanf(part[i:], "[%d]", &idx)
		}
		_, v := mapValue(cur, name)
		if v == nil {
			return cur
		}
		cur = v
		if idx >= 0 {
			if cur.Kind != yaml.SequenceNode || idx >= len(cur.Content) {
				return cur
			}
			cur = cur.Content[idx]
		}
	}
	return cur
}
