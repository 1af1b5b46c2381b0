package gateway

import (
	"testing"
	"time"
)

// step is one second of a scenario: the pool's concurrency in it, the
// ready replicas at its end, and the decision wanted then.
type step struct {
	secs        int     // how many seconds this step lasts
	concurrency float64 // reported each second
	ready       int
	want        int
	panic       bool
}

func TestAutoscaler(t *testing.T) {
	base := AutoscalerConfig{TargetConcurrency: 10, IdleTimeout: 30 * time.Second}
	for _, c := range []struct {
		name  string
		cfg   AutoscalerConfig
		steps []step
	}{
		{"never used: zero", base, []step{{secs: 5, want: 0}}},
		{"steady load", base, []step{{secs: 60, concurrency: 25, ready: 3, want: 3}}},
		{"one request keeps one warm", base, []step{{secs: 1, concurrency: 1, want: 1}, {secs: 10, ready: 1, want: 1}}},
		{"idle timeout scales to zero", base, []step{
			{secs: 1, concurrency: 1, want: 1},
			{secs: 28, ready: 1, want: 1}, // 28 s since the last traffic
			{secs: 2, ready: 1, want: 0},  // 30 s
		}},
		{"min replicas hold", AutoscalerConfig{TargetConcurrency: 10, IdleTimeout: 30 * time.Second, MinReplicas: 2}, []step{
			{secs: 1, concurrency: 1, want: 2},
			{secs: 60, ready: 2, want: 2},
		}},
		{"max replicas bound", AutoscalerConfig{TargetConcurrency: 10, MaxReplicas: 4}, []step{
			{secs: 60, concurrency: 100, ready: 4, want: 4, panic: true},
		}},
		{"burst panics and follows the panic window", base, []step{
			{secs: 60, concurrency: 10, ready: 1, want: 1},
			// 6 s at 60: panic window average 60 = 6 replicas ≥ 2×1.
			{secs: 6, concurrency: 60, ready: 1, want: 6, panic: true},
		}},
		{"panic does not scale down until a stable window passes", base, []step{
			{secs: 60, concurrency: 10, ready: 1, want: 1},
			{secs: 6, concurrency: 60, ready: 1, want: 6, panic: true},
			{secs: 30, concurrency: 10, ready: 6, want: 6, panic: true},
			{secs: 30, concurrency: 10, ready: 6, want: 1},
		}},
		{"below threshold no panic", base, []step{
			{secs: 60, concurrency: 20, ready: 2, want: 2},
			{secs: 6, concurrency: 35, ready: 2, want: 3},
		}},
		{"cold start: waiting requests on zero replicas", base, []step{
			{secs: 1, concurrency: 3, ready: 0, want: 1},
		}},
	} {
		a, err := NewAutoscaler(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(10_000, 0)
		for i, s := range c.steps {
			var d Decision
			for range s.secs {
				now = now.Add(time.Second)
				if s.concurrency > 0 {
					// Two gateways share the load.
					a.Record(Sample{At: now, Interval: time.Second, Concurrency: s.concurrency / 2})
					a.Record(Sample{At: now, Interval: time.Second, Concurrency: s.concurrency / 2})
				}
				d = a.Desired(now, s.ready)
			}
			if d.Replicas != s.want || d.Panic != s.panic {
				t.Errorf("%s: step %d: Desired = %d (panic %v, stable %.1f, burst %.1f); want %d (panic %v)",
					c.name, i, d.Replicas, d.Panic, d.StableConcurrency, d.PanicConcurrency, s.want, s.panic)
			}
		}
	}
}

func TestAutoscalerConfigRejects(t *testing.T) {
	for _, c := range []AutoscalerConfig{
		{TargetConcurrency: -1},
		{StableWindow: time.Second, PanicWindow: time.Minute},
		{MinReplicas: 3, MaxReplicas: 2},
	} {
		if _, err := NewAutoscaler(c); err == nil {
			t.Errorf("NewAutoscaler(%+v) = nil error; want ErrConfig", c)
		}
	}
}
