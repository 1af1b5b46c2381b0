package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh/meshtest"
	"github.com/shoalmesh/shoal/runtime/gateway"
	"github.com/shoalmesh/shoal/runtime/gateway/gatewaytest"
)

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}}

// timed sends one non-streaming chat request and returns how long the
// whole answer took.
func timed(tb testing.TB, url string) time.Duration {
	start := time.Now()
	resp, err := benchClient.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("tiny", false)))
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("status %d", resp.StatusCode)
	}
	return time.Since(start)
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// compare runs b.N requests through url and as many straight to the
// replica, interleaved, and reports both and the difference.
func compare(b *testing.B, url, direct string) {
	for range 20 { // warm connections and streams
		timed(b, url)
		timed(b, direct)
	}
	var via, dir []time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			via = append(via, timed(b, url))
			dir = append(dir, timed(b, direct))
		} else {
			dir = append(dir, timed(b, direct))
			via = append(via, timed(b, url))
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(quantile(via, .5)), "p50-ms")
	b.ReportMetric(ms(quantile(via, .99)), "p99-ms")
	b.ReportMetric(ms(quantile(dir, .5)), "direct-p50-ms")
	b.ReportMetric(ms(quantile(dir, .99)), "direct-p99-ms")
	b.ReportMetric(ms(quantile(via, .5)-quantile(dir, .5)), "overhead-p50-ms")
	b.ReportMetric(ms(quantile(via, .99)-quantile(dir, .99)), "overhead-p99-ms")
}

func BenchmarkDirect(b *testing.B) {
	rep := startReplica(b, "tiny", selfID)
	for range 20 {
		timed(b, rep.Endpoint)
	}
	var ds []time.Duration
	b.ResetTimer()
	for range b.N {
		ds = append(ds, timed(b, rep.Endpoint))
	}
	b.StopTimer()
	b.ReportMetric(ms(quantile(ds, .5)), "p50-ms")
	b.ReportMetric(ms(quantile(ds, .99)), "p99-ms")
}

func BenchmarkWarmLocal(b *testing.B) {
	dir := gatewaytest.NewDirectory("tiny")
	rep := startReplica(b, "tiny", selfID)
	dir.Set("tiny", rep)
	h := newHarness(b, gateway.Config{Self: selfID, Directory: dir})
	compare(b, h.url, rep.Endpoint)
}

func BenchmarkWarmCrossNode(b *testing.B) {
	c := newCrossNode(b)
	rep := startReplica(b, "tiny", c.nodes[1].ID())
	c.dir.Set("tiny", rep)
	compare(b, c.a.url, rep.Endpoint)
}

// BenchmarkColdForward measures the gateway's part of a cold start: from
// the Directory listing a new replica to the waiting request arriving at
// it (a fresh loopback server each time, so a new connection too).
func BenchmarkColdForward(b *testing.B) {
	dir := gatewaytest.NewDirectory("tiny")
	h := newHarness(b, gateway.Config{Self: selfID, Directory: dir})
	var delays []time.Duration
	for i := range b.N {
		arrived := make(chan time.Time, 1)
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- time.Now()
			io.WriteString(w, "{}")
		}))
		dir.Set("tiny")
		done := make(chan error, 1)
		go func() {
			resp, err := benchClient.Post(h.url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("tiny", false)))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
		if !meshtest.Eventually(10*time.Second, func() bool { return h.gw.Waiting("tiny") == 1 }) {
			b.Fatal("request never waited")
		}
		ready := time.Now()
		dir.Set("tiny", gateway.Replica{ID: "c" + string(rune('a'+i%26)), Deployment: "tiny", Node: selfID, Endpoint: app.URL})
		select {
		case at := <-arrived:
			delays = append(delays, at.Sub(ready))
		case <-time.After(10 * time.Second):
			b.Fatal("the waiting request did not arrive")
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		app.Close()
	}
	b.ReportMetric(ms(quantile(delays, .5)), "p50-ms")
	b.ReportMetric(ms(quantile(delays, .99)), "p99-ms")
}
