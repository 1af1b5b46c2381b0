package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/runtimetest"
)

// referenceEngine returns a client of the local Docker engine with the
// reference image built as a tag of this test process, removed when the
// test ends; it skips the test where no engine answers. Every container
// of the nodes whose IDs owners returns (at cleanup time) is removed at the
// end, after the nodes stopped: register it before starting them.
func referenceEngine(t testing.TB, owners func() []string) (*client.Client, string) {
	t.Helper()
	c, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Skipf("no Docker engine: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{}); err != nil {
		c.Close()
		t.Skipf("no Docker engine answers (DOCKER_HOST=%q): %v", os.Getenv("DOCKER_HOST"), err)
	}
	image := fmt.Sprintf("shoal-reference:e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	bctx, bcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer bcancel()
	if err := runtimetest.BuildReferenceImage(bctx, c, referenceBinary(t), image); err != nil {
		c.Close()
		t.Fatalf("build %s: %v", image, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, owner := range owners() {
			for _, x := range containersOf(t, c, owner) {
				c.ContainerRemove(ctx, x, client.ContainerRemoveOptions{Force: true})
			}
		}
		if _, err := c.ImageRemove(ctx, image, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Logf("remove image %s: %v", image, err)
		}
		c.Close()
	})
	return c, image
}

// containersOf lists the IDs of the containers the node owner runs.
func containersOf(t testing.TB, c *client.Client, owner string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := make(client.Filters).Add("label", runtime.LabelOwner+"="+owner)
	res, err := c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Errorf("list containers of %s: %v", owner, err)
		return nil
	}
	var out []string
	for _, x := range res.Items {
		out = append(out, x.ID)
	}
	return out
}

// containerAlive reports whether the container id runs.
func containerAlive(c *client.Client) replicaAlive {
	return func(id string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		in, err := c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		return err == nil && in.Container.State != nil && in.Container.State.Running
	}
}

// owners collects the IDs of the nodes a test starts, for the cleanup.
type owners struct {
	mu  sync.Mutex
	ids []string
}

func (o *owners) add(n *Node) {
	id := n.PeerID()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ids = append(o.ids, id)
}

func (o *owners) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.ids...)
}

// The scenario through the Docker backend: three nodes, the
// reference model imported on M, A alone has a GPU and runs containers;
// deployed to scale to zero, a chat request to C starts a container on A
// with exactly what its reservation holds; after the idle timeout the
// container is gone and the GPU free; the next request starts it again. An
// image that cannot be pulled fails the replica, naming the image, and
// leaves no container.
func TestServeDockerScaleToZero(t *testing.T) {
	var own owners
	c, image := referenceEngine(t, own.list)
	ref := referenceBinary(t)
	want, imp := referenceModel(t, ref, "tiny")
	dock := []string{"--runtime", "docker"}
	nodes, _ := startPool(t, [][]string{dock, append([]string{"--gpu", "RTX 4090:24GiB:16384"}, dock...), dock})
	m, a, cn := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		own.add(n)
	}
	aID := a.PeerID()
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := Run(t, "--home", cn.Home, "ps")
			t.Logf("ps on C:\n%s", out)
			if b, err := os.ReadFile(filepath.Join(a.Home, "daemon.log")); err == nil {
				t.Logf("A's log ends:\n%s", b[max(0, len(b)-4000):])
			}
		}
	})
	var st struct {
		Runtime string `json:"runtime"`
	}
	a.JSON(&st, "status")
	if !strings.HasPrefix(st.Runtime, "docker") {
		t.Errorf("status of A says runtime %q; want docker", st.Runtime)
	}
	m.Shoal("weights", "add", imp, "--name", "tiny")
	if !Eventually(20*time.Second, func() bool {
		var ms []struct {
			Name string `json:"name"`
		}
		a.JSON(&ms, "weights", "ls")
		return len(ms) == 1
	}) {
		t.Fatal("A never lists model tiny")
	}
	deployTemplate(t, cn, refTemplate(image, 0, "3s"), "ref", "tiny")
	base := cn.gateway(t)
	direct := directAnswer(t, ref, want)

	got, cold := chat(t, base)
	if got.Choices[0].Message.Content != direct {
		t.Fatalf("answer through C's gateway = %q; want %q (the workload's own)", got.Choices[0].Message.Content, direct)
	}
	run := readyRun(t, a, "ref", 10*time.Second)
	t.Logf("Docker cold start through a remote gateway %v; on A: weights %.1f ms, container start to healthy %.1f ms",
		cold, run.Start.WeightsMillis, run.Start.StartMillis)
	if run.Backend != "docker" {
		t.Fatalf("replica runs on %q; want docker", run.Backend)
	}
	// `shoal nodes` on C shows A's GPU reserved (the reservation was
	// announced before the container started). A request per look keeps
	// the replica from its 3 s idle timeout while A's record reaches C,
	// which on a loaded machine took more than 2 s.
	if !Eventually(10*time.Second, func() bool {
		chat(t, base)
		return gpuReserved(t, cn, aID) == 1000
	}) {
		t.Errorf("shoal nodes on C: A's GPU reserved %d milli-GPU while the container runs; want 1000", gpuReserved(t, cn, aID))
	}

	// The container holds what the reservation says and no more.
	ctx := context.Background()
	in, err := c.ContainerInspect(ctx, run.Ref, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := a.ledger(t)
	if len(l.Reservations) != 1 {
		t.Fatalf("A's ledger while serving: %+v; want one reservation", l)
	}
	res := l.Reservations[0]
	labels := in.Container.Config.Labels
	var pool struct {
		PoolID string `json:"pool_id"`
	}
	a.JSON(&pool, "status")
	for k, v := range map[string]string{
		runtime.LabelPool: pool.PoolID, runtime.LabelOwner: aID, runtime.LabelDeployment: "ref",
		runtime.LabelReservation: res.ID, runtime.LabelGPUs: res.Claim.GPUs[0].UUID,
	} {
		if labels[k] != v {
			t.Errorf("label %s = %q; want %q", k, labels[k], v)
		}
	}
	hc := in.Container.HostConfig
	if hc.Privileged || hc.NetworkMode.IsHost() {
		t.Errorf("privileged %v, network %q; want neither", hc.Privileged, hc.NetworkMode)
	}
	if hc.NanoCPUs != res.Claim.CPUMilli*1e6 || hc.Memory != res.Claim.MemoryBytes {
		t.Errorf("limits %d nano-CPUs, %d bytes; want %d and %d", hc.NanoCPUs, hc.Memory, res.Claim.CPUMilli*1e6, res.Claim.MemoryBytes)
	}
	if len(hc.Mounts) != 1 || !hc.Mounts[0].ReadOnly || hc.Mounts[0].Target != "/models" {
		t.Errorf("mounts %+v; want the model directory read-only at /models", hc.Mounts)
	}
	for _, bs := range hc.PortBindings {
		for _, b := range bs {
			if b.HostIP.String() != "127.0.0.1" {
				t.Errorf("port published on %v; want 127.0.0.1 only", b.HostIP)
			}
		}
	}
	if env := strings.Join(in.Container.Config.Env, " "); !strings.Contains(env, "CUDA_VISIBLE_DEVICES="+res.Claim.GPUs[0].UUID) {
		t.Errorf("env %s; want exactly the reserved GPU visible", env)
	}

	// Idle: the container goes and the GPU is free again.
	idleFrom := time.Now()
	if !Eventually(20*time.Second, func() bool {
		l := a.ledger(t)
		return len(l.Reservations) == 0 && l.Free.GPUs[0].Milli == 1000 && len(containersOf(t, c, aID)) == 0
	}) {
		t.Fatalf("after the idle timeout A's ledger is %+v and its containers %v; want the GPU free and none", a.ledger(t), containersOf(t, c, aID))
	}
	t.Logf("container removed and GPU free %v after the last request (idle timeout 3 s)", time.Since(idleFrom))
	if !Eventually(10*time.Second, func() bool { return gpuReserved(t, cn, aID) == 0 }) {
		t.Fatalf("shoal nodes on C: A's GPU still reserved %d milli-GPU after the idle timeout; want 0", gpuReserved(t, cn, aID))
	}

	// The next request starts it again.
	again, cold2 := chat(t, base)
	if again.Choices[0].Message.Content != direct {
		t.Errorf("answer after scale to zero = %q; want %q", again.Choices[0].Message.Content, direct)
	}
	t.Logf("second Docker cold start %v (weights already local)", cold2)

	// An image no registry has: the replica fails naming it, and nothing of it is left.
	deployTemplate(t, cn, refTemplate("shoal-test-no-such-image:0", 1, "10m"), "nopull", "tiny")
	var failed []psRun
	if !Eventually(30*time.Second, func() bool {
		failed = a.runs("nopull")
		return len(failed) > 0 && failed[0].State == "failed"
	}) {
		t.Fatalf("replicas of nopull = %+v; want failed", failed)
	}
	if !strings.Contains(failed[0].Reason, "shoal-test-no-such-image:0") {
		t.Errorf("reason %q does not name the image", failed[0].Reason)
	}
	t.Logf("unpullable image: %s", failed[0].Reason)
	for _, id := range containersOf(t, c, aID) {
		in, err := c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err == nil && in.Container.Config.Labels[runtime.LabelDeployment] == "nopull" {
			t.Errorf("container %s of nopull left behind", shortID(id))
		}
	}
	for _, name := range []string{"ref", "nopull"} {
		cn.Shoal("rm", name)
	}
	if !Eventually(20*time.Second, func() bool { return len(containersOf(t, c, aID)) == 0 }) {
		t.Errorf("after rm A still runs containers %v", containersOf(t, c, aID))
	}
}

// directAnswer is what the reference workload answers chatBody from model
// when run by hand.
func directAnswer(t *testing.T, ref, model string) string {
	t.Helper()
	return direct(t, ref, model).Choices[0].Message.Content
}

// With the Docker backend: the container outlives its daemon and is
// adopted by the next one.
func TestServeAdoptsContainerAfterDaemonKill(t *testing.T) {
	var own owners
	c, image := referenceEngine(t, own.list)
	testAdoption(t, "docker", image, containerAlive(c), own.add)
}
