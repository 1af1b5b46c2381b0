package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMeterRateCountsCompleteSecondsOnly(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := newMeter(func() time.Time { return now })
	for i := 0; i < 12; i++ {
		m.add(1000) // 1000 B in each of 12 seconds
		now = now.Add(time.Second)
	}
	m.add(5000) // the current, incomplete second: not in the rate yet
	if got := m.total.Load(); got != 17000 {
		t.Errorf("total = %d; want 17000", got)
	}
	if got := m.rate(); got != 1000 {
		t.Errorf("rate = %v B/s; want 1000 (the last 10 complete seconds)", got)
	}
	now = now.Add(6 * time.Second) // the window now starts 4 seconds before the 5000
	if got, want := m.rate(), float64(5000+4*1000)/rateWindow; got != want {
		t.Errorf("rate 6 s later = %v; want %v", got, want)
	}
	now = now.Add(time.Minute)
	if got := m.rate(); got != 0 {
		t.Errorf("rate after a minute idle = %v; want 0", got)
	}
}

func TestRefusalReasonsAreBounded(t *testing.T) {
	s := newSchedulerMetrics()
	for i := 0; i < maxRefusalReasons+10; i++ {
		s.Refused(fmt.Sprintf("node: resource-%d", i))
	}
	s.Refused("node: resource-0") // known: still its own series
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.refusals)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("Gather = %d families, %v; want 1", len(mfs), err)
	}
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	if len(got) != maxRefusalReasons+1 {
		t.Errorf("%d refusal series; want %d (the first %d reasons and other)", len(got), maxRefusalReasons+1, maxRefusalReasons)
	}
	if got["other"] != 10 || got["node: resource-0"] != 2 {
		t.Errorf("other = %v, node: resource-0 = %v; want 10 and 2", got["other"], got["node: resource-0"])
	}
}
