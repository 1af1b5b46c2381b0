package gateway_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/gateway"
	"github.com/shoalmesh/shoal/runtime/runtimetest"
)

// *mesh.Node is what the daemon hands the gateway.
var (
	_ gateway.StreamOpener = (*mesh.Node)(nil)
	_ gateway.StreamServer = (*mesh.Node)(nil)
)

// Built once for the package: the reference workload and a model.
var (
	referenceBin string
	modelDir     string
	replicaDir   string
	replicaSeq   atomic.Int64
)

func TestMain(m *testing.M) {
	f, err := runtimetest.NewFixture("shoal-gateway-test-", "tiny-reference", 64<<10)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	referenceBin, modelDir = f.Bin, f.Model
	replicaDir = filepath.Join(f.Dir, "replicas")
	code := m.Run()
	f.Close()
	os.Exit(code)
}

// startReplica runs a reference workload serving deployment as a process
// replica on node, removed when the test ends.
func startReplica(tb testing.TB, deployment string, node peer.ID) gateway.Replica {
	tb.Helper()
	b, err := runtime.NewProcess(runtime.ProcessConfig{Dir: replicaDir, Owner: "gateway-test"})
	if err != nil {
		tb.Fatal(err)
	}
	id := fmt.Sprintf("r%d", replicaSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := runtime.StartHealthy(ctx, b, runtime.Spec{
		ReplicaID:    id,
		Deployment:   deployment,
		Command:      []string{referenceBin},
		Args:         []string{"--model-dir", "${shoal.modelDir}", "--served-model-name", "${shoal.servedName}"},
		HealthPath:   "/health",
		StartTimeout: 20 * time.Second,
		ModelDir:     modelDir,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Remove(context.Background(), id) })
	return gateway.Replica{ID: id, Deployment: deployment, Node: node, Endpoint: r.Endpoint}
}
