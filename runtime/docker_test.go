package runtime_test

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/runtimetest"
)

// referenceImage is built once from the static reference binary.
const referenceImage = "shoal-reference:test"

var (
	imageOnce  sync.Once
	imageErr   error
	imageBuilt *client.Client // the engine that holds the image, for TestMain to remove it
)

// dockerBackend returns a Docker backend for owner, skipping the test when
// no engine is reachable, with the reference image built.
func dockerBackend(t *testing.T, owner string) (*runtime.Docker, *client.Client) {
	t.Helper()
	c, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Skipf("no Docker engine: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := runtime.NewDocker(ctx, runtime.DockerConfig{Owner: owner, Client: c})
	if errors.Is(err, runtime.ErrNoEngine) {
		t.Skipf("no Docker engine reachable (DOCKER_HOST=%q): %v", os.Getenv("DOCKER_HOST"), err)
	}
	if err != nil {
		t.Fatal(err)
	}
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		imageErr = runtimetest.BuildReferenceImage(ctx, c, referenceBin, referenceImage)
		if imageErr == nil {
			imageBuilt, _ = client.New(client.FromEnv, client.WithAPIVersionNegotiation())
		}
	})
	if imageErr != nil {
		t.Fatalf("build %s: %v", referenceImage, imageErr)
	}
	return d, c
}

// removeReferenceImage removes the reference image if a test built it.
func removeReferenceImage() {
	if imageBuilt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	imageBuilt.ImageRemove(ctx, referenceImage, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	imageBuilt.Close()
}

func dockerSpec(id string) runtime.Spec {
	return runtime.Spec{
		ReplicaID:    id,
		Deployment:   "dock-deployment",
		Image:        referenceImage,
		Args:         []string{"--model-dir", "${shoal.modelDir}", "--served-model-name", "${shoal.servedName}"},
		Port:         8000,
		HealthPath:   "/health",
		StartTimeout: 30 * time.Second,
		NanoCPUs:     500_000_000,
		MemoryBytes:  128 << 20,
		ModelDir:     modelDir,
	}
}

// cleanupContainer removes the replica's container whatever the test did.
func cleanupContainer(t *testing.T, d *runtime.Docker, id string) {
	t.Cleanup(func() { d.Remove(context.Background(), id) })
}

func TestDockerReferenceServesAndIsAdopted(t *testing.T) {
	ctx := context.Background()
	d, c := dockerBackend(t, "node-dock-a")
	id := "dtest-serve"
	cleanupContainer(t, d, id)
	start := time.Now()
	r, err := runtime.StartHealthy(ctx, d, dockerSpec(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Docker create to healthy: %v", time.Since(start))
	if !strings.HasPrefix(r.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("endpoint %q; want loopback", r.Endpoint)
	}
	if got := modelsID(t, r.Endpoint); got != "dock-deployment" {
		t.Errorf("/v1/models id = %q; want dock-deployment", got)
	}
	if l := logs(t, d, id); !strings.Contains(l, `as "dock-deployment"`) {
		t.Errorf("logs = %q", l)
	}

	in, err := c.ContainerInspect(ctx, runtime.ContainerPrefix+id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := in.Container.HostConfig
	if len(hc.Mounts) != 1 || !hc.Mounts[0].ReadOnly || hc.Mounts[0].Source != modelDir || hc.Mounts[0].Target != "/models" {
		t.Errorf("mounts = %+v; want the model dir read-only at /models", hc.Mounts)
	}
	for _, bs := range hc.PortBindings {
		for _, b := range bs {
			if b.HostIP.String() != "127.0.0.1" {
				t.Errorf("port published on %v; want 127.0.0.1 only", b.HostIP)
			}
		}
	}
	if hc.NanoCPUs != 500_000_000 || hc.Memory != 128<<20 {
		t.Errorf("limits: %d nano-CPUs, %d bytes; want 5e8 and 128 MiB", hc.NanoCPUs, hc.Memory)
	}
	if len(hc.DeviceRequests) != 0 {
		t.Errorf("device requests %+v without reserved GPUs", hc.DeviceRequests)
	}
	if hc.Privileged || hc.NetworkMode.IsHost() {
		t.Errorf("privileged %v, network %q; want neither privileged nor the host's network", hc.Privileged, hc.NetworkMode)
	}
	// Nothing else of the host: no extra capabilities, devices, binds or
	// host namespaces, no confinement switched off, and the running
	// container's mounts are the model dir alone, read-only.
	if len(hc.CapAdd) != 0 || len(hc.Devices) != 0 || len(hc.Binds) != 0 || len(hc.VolumesFrom) != 0 {
		t.Errorf("cap-add %v, devices %v, binds %v, volumes-from %v; want none", hc.CapAdd, hc.Devices, hc.Binds, hc.VolumesFrom)
	}
	if !hc.CgroupnsMode.IsPrivate() {
		t.Errorf("cgroup namespace %q; want private", hc.CgroupnsMode)
	}
	if hc.PidMode.IsHost() || hc.IpcMode.IsHost() || hc.UTSMode.IsHost() || hc.UsernsMode.IsHost() {
		t.Errorf("namespaces pid %q ipc %q uts %q userns %q; want none of the host's", hc.PidMode, hc.IpcMode, hc.UTSMode, hc.UsernsMode)
	}
	for _, o := range hc.SecurityOpt {
		if strings.Contains(o, "unconfined") || strings.Contains(o, "disable") {
			t.Errorf("security option %q; want confinement left on", o)
		}
	}
	if ms := in.Container.Mounts; len(ms) != 1 || ms[0].Source != modelDir || ms[0].RW {
		t.Errorf("running container mounts = %+v; want only the model dir, read-only", ms)
	}

	// A restarted daemon finds and adopts it; another owner does not.
	again, _ := dockerBackend(t, "node-dock-a")
	list, err := again.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list, func(x runtime.Replica) bool { return x.ID == id }); i < 0 ||
		list[i].State != runtime.StateRunning || list[i].Endpoint != r.Endpoint || list[i].Deployment != "dock-deployment" {
		t.Fatalf("List = %+v; want %s running at %s", list, id, r.Endpoint)
	}
	other, _ := dockerBackend(t, "node-dock-b")
	if l, _ := other.List(ctx); len(l) != 0 {
		t.Fatalf("another owner lists %+v", l)
	}

	if err := again.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := d.Inspect(ctx, id)
	if err != nil || got.State != runtime.StateExited || got.ExitCode != 0 {
		t.Fatalf("after Stop: %+v, %v; want exited 0", got, err)
	}
	if err := d.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Inspect after Remove = %v; want ErrNotFound", err)
	}
}

func TestDockerGPURequestNamesExactlyTheReservedUUIDs(t *testing.T) {
	ctx := context.Background()
	d, c := dockerBackend(t, "node-dock-a")
	id := "dtest-gpu"
	cleanupContainer(t, d, id)
	s := dockerSpec(id)
	s.GPUUUIDs = []string{"GPU-8f2c0a4e-1111-2222-3333-444455556666", "GPU-0b1d9e7f-aaaa-bbbb-cccc-ddddeeeeffff"}
	s.VRAMLimitMiB, s.GPUFraction = 12288, 0.5
	cid, err := d.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	in, err := c.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reqs := in.Container.HostConfig.DeviceRequests
	if len(reqs) != 1 || reqs[0].Driver != "nvidia" || !slices.Equal(reqs[0].DeviceIDs, s.GPUUUIDs) ||
		len(reqs[0].Capabilities) != 1 || !slices.Equal(reqs[0].Capabilities[0], []string{"gpu"}) || reqs[0].Count != 0 {
		t.Fatalf("device requests = %+v; want one nvidia request for exactly %v", reqs, s.GPUUUIDs)
	}
	env := in.Container.Config.Env
	for _, want := range []string{"CUDA_VISIBLE_DEVICES=" + strings.Join(s.GPUUUIDs, ","), "SHOAL_VRAM_LIMIT_MIB=12288", "SHOAL_GPU_FRACTION=0.5", "SHOAL_MODEL_DIR=/models"} {
		if !slices.Contains(env, want) {
			t.Errorf("env %v lacks %s", env, want)
		}
	}
	if err := d.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}

	// Declared GPUs name no device: no request, but the workload sees them.
	decl := s
	decl.DeclaredGPUs = true
	cid, err = d.Create(ctx, decl)
	if err != nil {
		t.Fatal(err)
	}
	in, err = c.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if reqs := in.Container.HostConfig.DeviceRequests; len(reqs) != 0 {
		t.Errorf("device requests for declared GPUs = %+v; want none", reqs)
	}
	if env := in.Container.Config.Env; !slices.Contains(env, "CUDA_VISIBLE_DEVICES="+strings.Join(s.GPUUUIDs, ",")) {
		t.Errorf("env %v lacks the declared GPUs", env)
	}
	if err := d.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}

	// This engine has no GPUs: a start fails clearly and leaves nothing.
	_, err = runtime.StartHealthy(ctx, d, s)
	if err == nil {
		t.Skip("this engine started a GPU container; the no-GPU failure path is not testable here")
	}
	if !errors.Is(err, runtime.ErrStart) {
		t.Fatalf("StartHealthy with GPUs on a GPU-less engine = %v; want ErrStart", err)
	}
	t.Logf("GPU start on a GPU-less engine: %v", err)
	if _, err := d.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("container left behind after failed start: %v", err)
	}
}

func TestDockerFaultsLeaveNothingBehind(t *testing.T) {
	ctx := context.Background()
	d, _ := dockerBackend(t, "node-dock-a")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	tests := []struct {
		name string
		edit func(*runtime.Spec)
		want error
		says string
	}{
		{"image cannot be pulled", func(s *runtime.Spec) { s.Image = "shoal-test-no-such-image:0" }, runtime.ErrImagePull, "shoal-test-no-such-image:0"},
		{"port clash", func(s *runtime.Spec) { s.HostPort = busyPort }, runtime.ErrPortInUse, "127.0.0.1:"},
		{"never healthy", func(s *runtime.Spec) {
			s.HealthPath = "/never"
			s.StartTimeout = 3 * time.Second
		}, runtime.ErrUnhealthy, "404"},
		{"bad model", func(s *runtime.Spec) { s.ModelDir = t.TempDir() }, runtime.ErrExited, "refusing to start"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "dtest-fault-" + string(rune('a'+i))
			cleanupContainer(t, d, id)
			s := dockerSpec(id)
			tt.edit(&s)
			_, err := runtime.StartHealthy(ctx, d, s)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("StartHealthy = %v; want %v saying %q", err, tt.want, tt.says)
			}
			if _, err := d.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
				t.Fatalf("container left behind: %v", err)
			}
		})
	}
}
