package mesh_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// BenchmarkPoolFormation50 starts 50 real nodes on loopback in one process,
// has 49 of them join through the first at once, and measures the time until
// every node lists all 50 alive with their records, then the gossip traffic
// per node per second in the steady state (default 1 s heartbeats).
//
//	go test -run '^$' -bench PoolFormation50 -benchtime 1x ./mesh
func BenchmarkPoolFormation50(b *testing.B) {
	const size = 50
	for i := 0; i < b.N; i++ {
		p, err := mesh.NewPool()
		if err != nil {
			b.Fatal(err)
		}
		nodes := make([]*mesh.Node, size)
		for j := range nodes {
			c := meshtest.Config(b, p, fmt.Sprintf("n%02d", j))
			if j > 0 {
				c.Pool, _ = mesh.ParseToken(nodes[0].Token())
			}
			nodes[j] = meshtest.Start(b, c)
		}
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for _, n := range nodes[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := n.Join(ctx); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		for j, n := range nodes {
			if !meshtest.Eventually(60*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) }) {
				b.Fatalf("node %d never saw all %d members", j, size)
			}
		}
		formed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(formed.Seconds(), "s/full-membership")

		before := make([]mesh.Stats, size)
		for j, n := range nodes {
			before[j] = n.Stats()
		}
		const window = 5 * time.Second
		time.Sleep(window)
		var in, out int64
		for j, n := range nodes {
			s := n.Stats()
			in += s.GossipBytesIn - before[j].GossipBytesIn
			out += s.GossipBytesOut - before[j].GossipBytesOut
		}
		b.ReportMetric(float64(in)/size/window.Seconds(), "gossip-B-in/node/s")
		b.ReportMetric(float64(out)/size/window.Seconds(), "gossip-B-out/node/s")
		for _, n := range nodes {
			_ = n.Close()
		}
	}
}
