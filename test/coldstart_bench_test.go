package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// BenchmarkColdStart measures a cold start of the reference workload from
// zero replicas to the first byte of a chat answer, through the gateway of
// a node that does not run it, with the process and the Docker backend.
// Each iteration imports a fresh model on M, deploys it to scale to zero
// and sends one request to C; A (the only node with a GPU) fetches the
// weights from M and starts the replica. The phases, from the timings A
// reports in `shoal ps -o json` (one machine, one clock):
//
//	schedule-ms      request sent → A took up the committed reservation
//	pickup-ms        (part of schedule) reservation admitted → taken up
//	weights-ms       making the model local on A (a swarm fetch from M)
//	start-ms         process or container start → health path answers
//	first-answer-ms  replica healthy → first byte of the answer at the client
//	total-ms         request sent → first byte
//	overhead-ms      total - start: what the platform adds to the
//	                 workload's own start (target: under 1000)
//
// After the last iteration the replica stays up and warm requests measure
// the gateway's overhead over calling the replica directly (p50 of 200):
// warm-local-overhead-ms through A's gateway (target under 2), and
// warm-cross-overhead-ms through C's, over the mesh (target under 5).
// Medians over the iterations; run with -benchtime 5x for five.
func BenchmarkColdStart(b *testing.B) {
	for _, backend := range []string{"process", "docker"} {
		b.Run(backend, func(b *testing.B) { benchColdStart(b, backend) })
	}
}

func benchColdStart(b *testing.B, backend string) {
	ref := referenceBinary(b)
	var own owners
	image := ""
	var dc *client.Client
	if backend == "docker" {
		dc, image = referenceEngine(b, own.list)
	}
	flags := []string{"--runtime", backend}
	nodes, _ := startPool(b, [][]string{flags, append([]string{"--gpu", "RTX 4090:24GiB:16384"}, flags...), flags})
	m, a, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		own.add(n)
	}
	base := c.gateway(b)
	phases := map[string][]float64{}
	var last psRun
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		name := fmt.Sprintf("cs%d", i)
		_, imp := referenceModel(b, ref, name)
		m.Shoal("weights", "add", imp, "--name", name)
		if !Eventually(20*time.Second, func() bool { return listsModel(a, name) }) {
			b.Fatalf("A never lists model %s", name)
		}
		deployTemplate(b, c, refTemplate(image, 0, "10m"), name, name)
		b.StartTimer()

		sent := time.Now()
		first := chatFirstByte(b, base, name)
		b.StopTimer()
		last = readyRun(b, a, name, 10*time.Second)
		st := last.Start
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		total := ms(first.Sub(sent))
		phases["schedule-ms"] = append(phases["schedule-ms"], ms(st.Seen.Sub(sent)))
		phases["pickup-ms"] = append(phases["pickup-ms"], ms(st.Seen.Sub(st.Reserved)))
		phases["weights-ms"] = append(phases["weights-ms"], st.WeightsMillis)
		phases["start-ms"] = append(phases["start-ms"], st.StartMillis)
		phases["first-answer-ms"] = append(phases["first-answer-ms"], ms(first.Sub(st.Ready)))
		phases["total-ms"] = append(phases["total-ms"], total)
		phases["overhead-ms"] = append(phases["overhead-ms"], total-st.StartMillis)
		b.Logf("%s cold start %d: total %.0f ms = schedule %.0f (pickup %.0f) + weights %.0f + start %.0f + first answer %.0f",
			backend, i, total, ms(st.Seen.Sub(sent)), ms(st.Seen.Sub(st.Reserved)), st.WeightsMillis, st.StartMillis, ms(first.Sub(st.Ready)))
		if i < b.N-1 {
			if _, stderr, err := Run(b, "--home", c.Home, "rm", name); err != nil {
				b.Fatalf("rm %s: %v\n%s", name, err, stderr)
			}
			if !Eventually(20*time.Second, func() bool { return len(a.ledger(b).Reservations) == 0 }) {
				b.Fatalf("A still holds %+v after rm", a.ledger(b))
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	for k, v := range phases {
		b.ReportMetric(median(v), k)
	}

	// Warm: the replica of the last iteration, directly and through the
	// gateways.
	name := fmt.Sprintf("cs%d", b.N-1)
	endpoint := replicaEndpoint(b, a, last, dc)
	const n = 200
	p50 := func(url string) float64 {
		ds := make([]float64, n)
		for i := range ds {
			start := time.Now()
			chatFirstByte(b, url, name)
			ds[i] = float64(time.Since(start).Microseconds()) / 1000
		}
		return median(ds)
	}
	direct, local, cross := p50(endpoint), p50(a.gateway(b)), p50(base)
	b.ReportMetric(direct, "warm-direct-ms")
	b.ReportMetric(local-direct, "warm-local-overhead-ms")
	b.ReportMetric(cross-direct, "warm-cross-overhead-ms")
	b.Logf("%s warm p50 of %d: direct %.2f ms, through A (local) %.2f ms, through C (cross-node) %.2f ms", backend, n, direct, local, cross)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func listsModel(n *Node, name string) bool {
	var ms []struct {
		Name string `json:"name"`
	}
	n.JSON(&ms, "weights", "ls")
	return slices.ContainsFunc(ms, func(m struct {
		Name string `json:"name"`
	}) bool {
		return m.Name == name
	})
}

// chatFirstByte sends one chat request for model to base and returns when
// the first byte of the answer arrived; it reads the whole answer and
// fails on anything but 200.
func chatFirstByte(tb testing.TB, base, model string) time.Time {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var first time.Time
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }})
	body := strings.Replace(chatBody, `"model":"ref"`, `"model":`+strconv.Quote(model), 1)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("POST %s/v1/chat/completions: %v", base, err)
	}
	defer resp.Body.Close()
	bs, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("POST %s/v1/chat/completions = %d %s; want 200", base, resp.StatusCode, bs)
	}
	return first
}

// replicaEndpoint is the loopback URL of replica x on node a: from the
// process backend's state file, or the container's published port.
func replicaEndpoint(tb testing.TB, a *Node, x psRun, dc *client.Client) string {
	tb.Helper()
	if x.Backend == "docker" {
		in, err := dc.ContainerInspect(context.Background(), x.Ref, client.ContainerInspectOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		for _, bs := range in.Container.NetworkSettings.Ports {
			for _, p := range bs {
				if p.HostPort != "" {
					return "http://127.0.0.1:" + p.HostPort
				}
			}
		}
		tb.Fatalf("container %s publishes no port", shortID(x.Ref))
	}
	b, err := os.ReadFile(filepath.Join(a.Home, "replicas", x.ID+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	var st struct {
		Endpoint string `json:"endpoint"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Endpoint == "" {
		tb.Fatalf("state of %s: %v %s", x.ID, err, b)
	}
	return st.Endpoint
}
