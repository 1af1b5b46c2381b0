package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Errors of the backends. Callers test with errors.Is; the wrapped message
// says which replica, image or port.
var (
	ErrInvalidSpec   = errors.New("runtime: invalid spec")
	ErrNotFound      = errors.New("runtime: no such replica")
	ErrExists        = errors.New("runtime: replica already exists")
	ErrImagePull     = errors.New("runtime: image cannot be pulled")
	ErrPortInUse     = errors.New("runtime: port already in use")
	ErrStart         = errors.New("runtime: replica failed to start")
	ErrExited        = errors.New("runtime: replica exited")
	ErrUnhealthy     = errors.New("runtime: replica did not become healthy in time")
	ErrCrashLoop     = errors.New("runtime: replica keeps crashing")
	ErrNoEngine      = errors.New("runtime: container engine unreachable")
	ErrUnknownMarker = errors.New("runtime: unknown placeholder")
)

// Labels every replica carries (container labels for Docker, the state file
// for processes). They let a restarted daemon find its replicas and adopt or
// remove them.
const (
	LabelManaged    = "io.shoal.managed"    // "true"
	LabelOwner      = "io.shoal.owner"      // the owning node's ID; a daemon lists only its own
	LabelReplica    = "io.shoal.replica"    // Spec.ReplicaID
	LabelDeployment = "io.shoal.deployment" // Spec.Deployment
	LabelGPUs       = "io.shoal.gpus"       // comma-separated GPU UUIDs
	LabelPort       = "io.shoal.port"       // port inside
	LabelHealth     = "io.shoal.health"     // health path
	// Labels the node adds through Spec.Labels.
	LabelPool        = "io.shoal.pool"        // the pool's ID
	LabelReservation = "io.shoal.reservation" // the ledger reservation the replica runs on
)

// Environment variables every replica gets.
const (
	EnvPort          = "PORT"                    // the port the workload must listen on
	EnvHost          = "HOST"                    // the address to bind: 127.0.0.1 for processes, 0.0.0.0 in containers
	EnvVisibleGPUs   = "CUDA_VISIBLE_DEVICES"    // reserved GPU UUIDs, comma-separated; empty: none
	EnvVRAMLimitMiB  = "SHOAL_VRAM_LIMIT_MIB"    // VRAM the replica may use per GPU, MiB; unset for whole cards
	EnvGPUFraction   = "SHOAL_GPU_FRACTION"      // share of each GPU's memory, (0,1]
	EnvModelDir      = "SHOAL_MODEL_DIR"         // where the model directory is, as the workload sees it
	EnvServedName    = "SHOAL_SERVED_MODEL_NAME" // the model name to report: the deployment name
	EnvReplicaID     = "SHOAL_REPLICA_ID"
	EnvDeployment    = "SHOAL_DEPLOYMENT"
	defaultStopGrace = 10 * time.Second
)

// Spec is one replica to run. The node fills it from a rendered template
// and its reservation; the backends run it as given.
type Spec struct {
	// ReplicaID names the replica uniquely on this node: [a-zA-Z0-9_.-],
	// at most 64 characters. It names the container and the log file.
	ReplicaID string
	// Deployment is the deployment's name; the served model name.
	Deployment string

	// Image is the container image (Docker backend).
	Image string
	// Entrypoint replaces the image's entrypoint (Docker); empty keeps it.
	Entrypoint []string
	// Command is the program and its leading arguments (process backend);
	// Command[0] is looked up in PATH.
	Command []string
	// Args follow Command (process) or replace the image's CMD (Docker).
	// Placeholders ${shoal.*} are expanded by the backend; see Expand.
	Args []string
	// Env is added to the replica's environment (after the variables the
	// backend sets, so it may override HOST, but not PORT or
	// CUDA_VISIBLE_DEVICES).
	Env map[string]string

	// Port is the port the workload listens on inside a container (Docker;
	// required there). The process backend picks a free loopback port and
	// hands it over in PORT when Port is 0.
	Port int
	// HostPort publishes the workload on 127.0.0.1:HostPort; 0 picks a free
	// one. A port in use fails with ErrPortInUse.
	HostPort int
	// HealthPath is polled with GET until it answers 2xx; empty means the
	// workload has no HTTP endpoint and is healthy once it runs.
	HealthPath string
	// StartTimeout bounds start to healthy, including image pull and model
	// load; 0 means 5 minutes.
	StartTimeout time.Duration

	// GPUUUIDs are the reserved GPUs: exactly these are handed over.
	GPUUUIDs []string
	// VRAMLimitMiB is the VRAM the replica may use on each GPU when it holds
	// a fraction of one (0: whole cards). Handed over as
	// SHOAL_VRAM_LIMIT_MIB and ${shoal.vramLimitMiB}.
	VRAMLimitMiB int64
	// GPUFraction is the share of each GPU's memory, (0,1]; 0 means 1.
	// Handed over as SHOAL_GPU_FRACTION, ${shoal.gpuFraction} and
	// ${shoal.gpuMemoryUtilization} (the fraction, or 0.9 for a whole card,
	// the headroom vLLM-like engines want).
	GPUFraction float64
	// NanoCPUs limits CPU in billionths of a core (Docker); 0: no limit.
	NanoCPUs int64
	// MemoryBytes limits memory (Docker); 0: no limit.
	MemoryBytes int64

	// ModelDir is the materialised model directory on this host; empty when
	// the workload needs none. Mounted read-only at ModelMountPath (Docker)
	// or handed over as is (process).
	ModelDir string
	// ModelMountPath is where a container sees ModelDir; default /models.
	ModelMountPath string

	// Vars are values of further ${shoal.NAME} placeholders, such as the
	// gang ones (gang.rank, gang.peers.worker) a gang coordinator fills.
	Vars map[string]string

	// Labels are further labels the replica carries (container labels, or
	// the process backend's state file), such as LabelPool and
	// LabelReservation; keys under io.shoal. that the backend sets itself
	// (owner, replica, deployment, GPUs, port, health) cannot be replaced.
	Labels map[string]string
	// DeclaredGPUs says GPUUUIDs were declared by the operator, not
	// measured: their UUIDs name no device a container engine knows, so
	// the Docker backend makes no device request for them (the workload
	// still sees them in CUDA_VISIBLE_DEVICES and the labels).
	DeclaredGPUs bool
}

// Validate fills defaults and rejects a spec no backend could run.
func (s *Spec) Validate() error {
	if !validID.MatchString(s.ReplicaID) {
		return fmt.Errorf("%w: replica ID %q must be 1-64 of [a-zA-Z0-9_.-], starting alphanumeric", ErrInvalidSpec, s.ReplicaID)
	}
	if s.Image == "" && len(s.Command) == 0 {
		return fmt.Errorf("%w: replica %s: neither image nor command", ErrInvalidSpec, s.ReplicaID)
	}
	if s.Port < 0 || s.Port > 65535 || s.HostPort < 0 || s.HostPort > 65535 {
		return fmt.Errorf("%w: replica %s: port %d or host port %d out of range", ErrInvalidSpec, s.ReplicaID, s.Port, s.HostPort)
	}
	if s.GPUFraction < 0 || s.GPUFraction > 1 {
		return fmt.Errorf("%w: replica %s: GPU fraction %v not in (0,1]", ErrInvalidSpec, s.ReplicaID, s.GPUFraction)
	}
	if s.VRAMLimitMiB < 0 || s.NanoCPUs < 0 || s.MemoryBytes < 0 {
		return fmt.Errorf("%w: replica %s: negative limit", ErrInvalidSpec, s.ReplicaID)
	}
	for _, u := range s.GPUUUIDs {
		if u == "" || strings.ContainsAny(u, ", ") {
			return fmt.Errorf("%w: replica %s: GPU UUID %q", ErrInvalidSpec, s.ReplicaID, u)
		}
	}
	if s.HealthPath != "" && !strings.HasPrefix(s.HealthPath, "/") {
		return fmt.Errorf("%w: replica %s: health path %q must start with /", ErrInvalidSpec, s.ReplicaID, s.HealthPath)
	}
	if s.StartTimeout == 0 {
		s.StartTimeout = 5 * time.Minute
	}
	if s.ModelMountPath == "" {
		s.ModelMountPath = "/models"
	}
	return nil
}

var validID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

// placeholder matches ${shoal.NAME}.
var placeholder = regexp.MustCompile(`\$\{shoal\.([a-zA-Z0-9_.]+)\}`)

// Placeholders are the ${shoal.NAME} markers a backend expands in Args and
// Env values, with what each becomes.
var Placeholders = map[string]string{
	"port":                 "the port the workload listens on",
	"host":                 "the address the workload binds",
	"modelDir":             "the model directory as the workload sees it",
	"servedName":           "the model name to serve (the deployment name)",
	"replicaID":            "the replica's ID",
	"deployment":           "the deployment's name",
	"gpus":                 "the reserved GPU UUIDs, comma-separated",
	"gpuCount":             "how many GPUs are reserved",
	"vramLimitMiB":         "VRAM per GPU in MiB (0 for whole cards)",
	"gpuFraction":          "share of each GPU's memory, (0,1]",
	"gpuMemoryUtilization": "share for vLLM-like engines: the fraction, 0.9 for a whole card",
}

// values is what the placeholders expand to for a replica whose workload
// listens on port and sees the model at modelDir.
func (s *Spec) values(host string, port int, modelDir string) map[string]string {
	frac := s.GPUFraction
	if frac == 0 {
		frac = 1
	}
	util := frac
	if util == 1 {
		util = 0.9
	}
	vals := map[string]string{
		"port":                 strconv.Itoa(port),
		"host":                 host,
		"modelDir":             modelDir,
		"servedName":           s.Deployment,
		"replicaID":            s.ReplicaID,
		"deployment":           s.Deployment,
		"gpus":                 strings.Join(s.GPUUUIDs, ","),
		"gpuCount":             strconv.Itoa(len(s.GPUUUIDs)),
		"vramLimitMiB":         strconv.FormatInt(s.VRAMLimitMiB, 10),
		"gpuFraction":          strconv.FormatFloat(frac, 'f', -1, 64),
		"gpuMemoryUtilization": strconv.FormatFloat(util, 'f', -1, 64),
	}
	for k, v := range s.Vars {
		if _, builtin := vals[k]; !builtin {
			vals[k] = v
		}
	}
	return vals
}

// Expand replaces each ${shoal.NAME} in s by vals[NAME]; an unknown name is
// an error naming it.
func Expand(s string, vals map[string]string) (string, error) {
	var bad string
	out := placeholder.ReplaceAllStringFunc(s, func(m string) string {
		name := placeholder.FindStringSubmatch(m)[1]
		v, ok := vals[name]
		if !ok {
			bad = name
			return m
		}
		return v
	})
	if bad != "" {
		return "", fmt.Errorf("%w: ${shoal.%s} (known: %s)", ErrUnknownMarker, bad, strings.Join(slices.Sorted(maps.Keys(Placeholders)), ", "))
	}
	return out, nil
}

// environment is the replica's environment: the variables the backend sets,
// then Spec.Env (expanded) except for the ones the backend owns.
func (s *Spec) environment(vals map[string]string) (map[string]string, []string, error) {
	env := map[string]string{
		EnvPort:        vals["port"],
		EnvHost:        vals["host"],
		EnvVisibleGPUs: vals["gpus"],
		EnvGPUFraction: vals["gpuFraction"],
		EnvServedName:  s.Deployment,
		EnvReplicaID:   s.ReplicaID,
		EnvDeployment:  s.Deployment,
	}
	if s.VRAMLimitMiB > 0 {
		env[EnvVRAMLimitMiB] = vals["vramLimitMiB"]
	}
	if vals["modelDir"] != "" {
		env[EnvModelDir] = vals["modelDir"]
	}
	for k, v := range s.Env {
		if k == EnvPort || k == EnvVisibleGPUs {
			continue
		}
		x, err := Expand(v, vals)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", k, err)
		}
		env[k] = x
	}
	args := make([]string, len(s.Args))
	for i, a := range s.Args {
		x, err := Expand(a, vals)
		if err != nil {
			return nil, nil, fmt.Errorf("argument %d: %w", i, err)
		}
		args[i] = x
	}
	return env, args, nil
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// labels are the labels a replica of s carries, for owner: Spec.Labels,
// then the backend's own.
func (s *Spec) labels(owner string) map[string]string {
	out := maps.Clone(s.Labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, map[string]string{
		LabelManaged:    "true",
		LabelOwner:      owner,
		LabelReplica:    s.ReplicaID,
		LabelDeployment: s.Deployment,
		LabelGPUs:       strings.Join(s.GPUUUIDs, ","),
		LabelPort:       strconv.Itoa(s.Port),
		LabelHealth:     s.HealthPath,
	})
	return out
}

// State is where a replica is in its life.
type State string

// States.
const (
	StateCreated State = "created" // exists, not started
	StateRunning State = "running"
	StateExited  State = "exited" // stopped or crashed; ExitCode says which
	StateUnknown State = "unknown"
)

// Replica is a running or stopped replica as a backend sees it.
type Replica struct {
	ID         string            `json:"id"` // Spec.ReplicaID
	Deployment string            `json:"deployment"`
	Backend    string            `json:"backend"` // "docker" or "process"
	Ref        string            `json:"ref"`     // container ID or process ID
	State      State             `json:"state"`
	ExitCode   int               `json:"exit_code"`
	Endpoint   string            `json:"endpoint"` // http://127.0.0.1:PORT, empty until known
	HealthPath string            `json:"health_path"`
	GPUUUIDs   []string          `json:"gpu_uuids,omitempty"`
	StartedAt  time.Time         `json:"started_at"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// Backend runs replicas on this machine. Implementations are safe for
// concurrent use; every method is synchronous.
type Backend interface {
	// Start creates and starts a replica and returns once it runs (not yet
	// healthy). On error nothing is left behind.
	Start(ctx context.Context, s Spec) (Replica, error)
	// Inspect returns the replica's current state.
	Inspect(ctx context.Context, id string) (Replica, error)
	// Wait blocks until the replica is no longer running and returns it.
	Wait(ctx context.Context, id string) (Replica, error)
	// Logs returns the replica's output so far (stdout and stderr).
	Logs(ctx context.Context, id string) (io.ReadCloser, error)
	// Stop asks the replica to stop, then kills it after grace.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Remove stops the replica if it runs and deletes every trace of it
	// (container, log, state). Removing an unknown replica is not an error.
	Remove(ctx context.Context, id string) error
	// List returns this owner's replicas, running or not, so a restarted
	// daemon can adopt or remove them.
	List(ctx context.Context) ([]Replica, error)
}
