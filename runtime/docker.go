package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// DockerConfig configures the Docker backend.
type DockerConfig struct {
	// Owner is this node's ID, put in every container's labels; List
	// returns only this owner's containers, so two daemons can share an
	// engine. Required.
	Owner string
	// Client talks to the engine; nil means one from the environment
	// (DOCKER_HOST etc.) with API version negotiation.
	Client *client.Client
	// PullTimeout bounds pulling a missing image; default 30 minutes (model
	// server images are several GiB).
	PullTimeout time.Duration
	// GPUDriver is the device driver GPU requests name; default "nvidia".
	GPUDriver string
}

func (c *DockerConfig) validate() error {
	if c.Owner == "" {
		return fmt.Errorf("%w: Docker backend needs an owner", ErrInvalidSpec)
	}
	if c.PullTimeout <= 0 {
		c.PullTimeout = 30 * time.Minute
	}
	if c.GPUDriver == "" {
		c.GPUDriver = "nvidia"
	}
	return nil
}

// Docker runs each replica as a container through the Docker Engine API:
// exactly the reserved GPUs as a device request, CPU and memory limits, the
// model directory mounted read-only, the port published on 127.0.0.1 only,
// and labels that let a restarted daemon adopt or remove its containers.
type Docker struct {
	cfg DockerConfig
	c   *client.Client
}

var _ Backend = (*Docker)(nil)

// ContainerPrefix starts the name of every container of a replica.
const ContainerPrefix = "shoal-"

// NewDocker connects to the engine; ErrNoEngine when it cannot be reached.
func NewDocker(ctx context.Context, cfg DockerConfig) (*Docker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := cfg.Client
	if c == nil {
		var err error
		c, err = client.New(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoEngine, err)
		}
	}
	if _, err := c.Ping(ctx, client.PingOptions{}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	return &Docker{cfg: cfg, c: c}, nil
}

// Close releases the client when NewDocker made it.
func (d *Docker) Close() error {
	if d.cfg.Client == nil {
		return d.c.Close()
	}
	return nil
}

func containerName(id string) string { return ContainerPrefix + id }

// Start implements Backend.
func (d *Docker) Start(ctx context.Context, s Spec) (Replica, error) {
	id, err := d.Create(ctx, s)
	if err != nil {
		return Replica{}, err
	}
	if _, err := d.c.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		d.c.ContainerRemove(context.WithoutCancel(ctx), id, client.ContainerRemoveOptions{Force: true})
		return Replica{}, fmt.Errorf("%w: %s: %w", ErrStart, s.ReplicaID, err)
	}
	return d.Inspect(ctx, s.ReplicaID)
}

// Create creates the replica's container without starting it and returns
// the container's ID: Start is Create then start. Alone it lets a caller
// check what a start would ask of the engine (device requests, mounts,
// limits) where the engine cannot run it, such as a GPU request on a
// machine without GPUs.
func (d *Docker) Create(ctx context.Context, s Spec) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	if s.Image == "" {
		return "", fmt.Errorf("%w: replica %s: the Docker backend needs an image", ErrInvalidSpec, s.ReplicaID)
	}
	if s.HealthPath != "" && s.Port == 0 {
		return "", fmt.Errorf("%w: replica %s: a health path needs a port inside", ErrInvalidSpec, s.ReplicaID)
	}
	name := containerName(s.ReplicaID)
	if _, err := d.c.ContainerInspect(ctx, name, client.ContainerInspectOptions{}); err == nil {
		return "", fmt.Errorf("%w: %s (container %s)", ErrExists, s.ReplicaID, name)
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	if s.HostPort != 0 {
		if _, err := loopbackPort(s.HostPort); err != nil {
			return "", fmt.Errorf("replica %s: %w", s.ReplicaID, err)
		}
	}
	if err := d.ensureImage(ctx, s.Image); err != nil {
		return "", fmt.Errorf("replica %s: %w", s.ReplicaID, err)
	}
	modelDir := ""
	if s.ModelDir != "" {
		modelDir = s.ModelMountPath
	}
	env, args, err := s.environment(s.values("0.0.0.0", s.Port, modelDir))
	if err != nil {
		return "", fmt.Errorf("%w: replica %s: %w", ErrInvalidSpec, s.ReplicaID, err)
	}
	cfg := &container.Config{
		Image:  s.Image,
		Cmd:    args,
		Env:    envList(env),
		Labels: s.labels(d.cfg.Owner),
	}
	if len(s.Entrypoint) > 0 {
		cfg.Entrypoint = s.Entrypoint
	}
	hc := &container.HostConfig{
		// Never privileged, never the host's network: the published
		// loopback port is the only way in.
		Privileged:  false,
		NetworkMode: network.NetworkBridge,
		// Its own cgroup namespace (the engine's default is the host's on
		// cgroup v1), so the replica sees no cgroup paths of the host.
		CgroupnsMode: container.CgroupnsModePrivate,
		Resources: container.Resources{
			NanoCPUs: s.NanoCPUs,
			Memory:   s.MemoryBytes,
		},
	}
	if s.Port > 0 {
		// Published on loopback only: the gateway is the way in.
		port, _ := network.PortFrom(uint16(s.Port), network.TCP)
		hostPort := ""
		if s.HostPort != 0 {
			hostPort = strconv.Itoa(s.HostPort)
		}
		cfg.ExposedPorts = network.PortSet{port: {}}
		hc.PortBindings = network.PortMap{port: {{HostIP: netip.AddrFrom4([4]byte{127, 0, 0, 1}), HostPort: hostPort}}}
	}
	if len(s.GPUUUIDs) > 0 && !s.DeclaredGPUs {
		hc.Resources.DeviceRequests = []container.DeviceRequest{{
			Driver:       d.cfg.GPUDriver,
			DeviceIDs:    append([]string(nil), s.GPUUUIDs...),
			Capabilities: [][]string{{"gpu"}},
		}}
	}
	if s.ModelDir != "" {
		hc.Mounts = []mount.Mount{{Type: mount.TypeBind, Source: s.ModelDir, Target: s.ModelMountPath, ReadOnly: true}}
	}
	created, err := d.c.ContainerCreate(ctx, client.ContainerCreateOptions{Name: name, Config: cfg, HostConfig: hc})
	if err != nil {
		return "", fmt.Errorf("%w: %s: create: %w", ErrStart, s.ReplicaID, err)
	}
	return created.ID, nil
}

// HasImage reports whether the engine holds image, without pulling it.
func (d *Docker) HasImage(ctx context.Context, image string) (bool, error) {
	if _, err := d.c.ImageInspect(ctx, image); err == nil {
		return true, nil
	} else if !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	return false, nil
}

// Engine describes the engine, e.g. "Docker 20.10.24 (API 1.41)".
func (d *Docker) Engine(ctx context.Context) string {
	v, err := d.c.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return "Docker"
	}
	return fmt.Sprintf("Docker %s (API %s)", v.Version, d.c.ClientVersion())
}

// ensureImage pulls the image when the engine does not have it.
func (d *Docker) ensureImage(ctx context.Context, image string) error {
	if ok, err := d.HasImage(ctx, image); err != nil || ok {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, d.cfg.PullTimeout)
	defer cancel()
	resp, err := d.c.ImagePull(pctx, image, client.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrImagePull, image, err)
	}
	defer resp.Close()
	if err := resp.Wait(pctx); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrImagePull, image, err)
	}
	return nil
}

// Inspect implements Backend.
func (d *Docker) Inspect(ctx context.Context, id string) (Replica, error) {
	res, err := d.c.ContainerInspect(ctx, containerName(id), client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return Replica{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Replica{}, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	return replicaOf(res.Container), nil
}

func replicaOf(c container.InspectResponse) Replica {
	r := Replica{ID: c.Name, Backend: "docker", Ref: c.ID, State: StateUnknown}
	if c.Config != nil {
		r.Labels = c.Config.Labels
		r.ID = r.Labels[LabelReplica]
		r.Deployment = r.Labels[LabelDeployment]
		r.HealthPath = r.Labels[LabelHealth]
		if g := r.Labels[LabelGPUs]; g != "" {
			r.GPUUUIDs = splitComma(g)
		}
	}
	if st := c.State; st != nil {
		switch st.Status {
		case container.StateCreated:
			r.State = StateCreated
		case container.StateRunning, container.StatePaused, container.StateRestarting:
			r.State = StateRunning
		case container.StateExited, container.StateDead, container.StateRemoving:
			r.State = StateExited
		}
		r.ExitCode = st.ExitCode
		r.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
	}
	if ns := c.NetworkSettings; ns != nil && r.State == StateRunning {
		for p, bs := range ns.Ports {
			if strconv.Itoa(int(p.Num())) != r.Labels[LabelPort] {
				continue
			}
			for _, b := range bs {
				if b.HostPort != "" {
					r.Endpoint = "http://127.0.0.1:" + b.HostPort
					break
				}
			}
		}
	}
	return r
}

func splitComma(s string) []string {
	var out []string
	for len(s) > 0 {
		i := bytes.IndexByte([]byte(s), ',')
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
	return out
}

// Wait implements Backend.
func (d *Docker) Wait(ctx context.Context, id string) (Replica, error) {
	w := d.c.ContainerWait(ctx, containerName(id), client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-w.Result:
	case err := <-w.Error:
		if cerrdefs.IsNotFound(err) {
			return Replica{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if ctx.Err() != nil {
			return Replica{}, ctx.Err()
		}
		return Replica{}, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	return d.Inspect(ctx, id)
}

// Logs implements Backend: the container's stdout and stderr so far,
// interleaved as written.
func (d *Docker) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	rc, err := d.c.ContainerLogs(ctx, containerName(id), client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
		return nil, fmt.Errorf("runtime: logs of %s: %w", id, err)
	}
	return io.NopCloser(&buf), nil
}

// Stop implements Backend: SIGTERM, SIGKILL after grace (default 10 s).
func (d *Docker) Stop(ctx context.Context, id string, grace time.Duration) error {
	if grace <= 0 {
		grace = defaultStopGrace
	}
	secs := int((grace + time.Second - 1) / time.Second)
	_, err := d.c.ContainerStop(ctx, containerName(id), client.ContainerStopOptions{Timeout: &secs})
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	return nil
}

// Remove implements Backend: the container goes, running or not.
func (d *Docker) Remove(ctx context.Context, id string) error {
	_, err := d.c.ContainerRemove(ctx, containerName(id), client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%w: remove %s: %w", ErrNoEngine, id, err)
	}
	return nil
}

// List implements Backend.
func (d *Docker) List(ctx context.Context) ([]Replica, error) {
	f := make(client.Filters).Add("label", LabelManaged+"=true", LabelOwner+"="+d.cfg.Owner)
	res, err := d.c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	out := make([]Replica, 0, len(res.Items))
	for _, c := range res.Items {
		r, err := d.Inspect(ctx, c.Labels[LabelReplica])
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, r)
	}
	return out, nil
}
