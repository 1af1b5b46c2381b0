package test

import (
	"sort"
	"testing"
	"time"
)

// BenchmarkPoolProcesses measures real shoal processes on loopback:
//
//   - start-to-ready: `shoal up --detach` returning (daemon ready) on a new home;
//
//   - join-to-listed: `shoal join --detach` until every member lists the newcomer alive;
//
//   - kill-to-dead: SIGKILL of a member until every other member lists it dead;
//
//   - idle RSS of a member of a 4-node pool after 10 s idle.
//
//     go test -run '^$' -bench PoolProcesses -benchtime 1x ./test
func BenchmarkPoolProcesses(b *testing.B) {
	Binary(b)
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		first := Up(b, NewHome(b), "--gpu", "RTX 4090:24GiB")
		ready := time.Since(t0)
		token := first.Token()
		nodes := []*Node{first}
		var joins []time.Duration
		for j := 0; j < 3; j++ {
			t0 := time.Now()
			n := Join(b, NewHome(b), token, "--gpu", "RTX 3060:12GiB")
			id := n.PeerID()
			all := append(nodes, n)
			if !Eventually(30*time.Second, func() bool { return ListedBy(all, id, "alive") }) {
				b.Fatalf("join %d never listed by every member", j)
			}
			joins = append(joins, time.Since(t0))
			nodes = all
		}
		time.Sleep(10 * time.Second)
		rss := first.RSS()

		victim := nodes[3]
		id := victim.PeerID()
		t0 = time.Now()
		victim.Kill()
		if !Eventually(30*time.Second, func() bool { return ListedBy(nodes[:3], id, "dead") }) {
			b.Fatal("killed member never marked dead by all")
		}
		detect := time.Since(t0)
		sort.Slice(joins, func(x, y int) bool { return joins[x] < joins[y] })
		b.ReportMetric(float64(ready.Milliseconds()), "ms/start-to-ready")
		b.ReportMetric(float64(joins[len(joins)/2].Milliseconds()), "ms/join-to-listed-p50")
		b.ReportMetric(float64(joins[len(joins)-1].Milliseconds()), "ms/join-to-listed-max")
		b.ReportMetric(detect.Seconds(), "s/kill-to-dead")
		b.ReportMetric(float64(rss)/(1<<20), "MiB-idle-RSS")
		for _, n := range nodes {
			n.Stop()
		}
	}
}
