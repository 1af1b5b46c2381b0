package market

import (
	"errors"
	"testing"
)

func TestParseCredits(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Micro
		err  bool
	}{
		{"0", 0, false},
		{"2", 2 * Credit, false},
		{"0.75", 750_000, false},
		{".5", 500_000, false},
		{"1.000001", 1_000_001, false},
		{"1000", MaxPrice, false},
		{"1000.000001", 0, true},
		{"1.0000001", 0, true},
		{"-1", 0, true},
		{"1e3", 0, true},
		{"", 0, true},
		{"1.", 0, true},
		{"99999999", 0, true},
	} {
		got, err := ParseCredits(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseCredits(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrPrice) {
			t.Errorf("ParseCredits(%q) error %v is not ErrPrice", tc.in, err)
		}
	}
}

func TestMicroString(t *testing.T) {
	for _, tc := range []struct {
		m    Micro
		want string
	}{{0, "0.000000"}, {1_250_000, "1.250000"}, {-3, "-0.000003"}, {7 * Credit, "7.000000"}} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("Micro(%d).String() = %q; want %q", int64(tc.m), got, tc.want)
		}
	}
}

func TestCost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		price Micro
		t     GPUTime
		want  Micro
		ok    bool
	}{
		{"free", 0, GPUHour, 0, true},
		{"one GPU-hour", 2 * Credit, GPUHour, 2 * Credit, true},
		{"half a GPU for a minute", 2 * Credit, GPUSecond * 30, 16_666, true}, // 2/120 credit, rounded down
		{"max price, 64 GPUs, an hour", MaxPrice, 64 * GPUHour, 64 * MaxPrice, true},
		{"negative price", -1, GPUHour, 0, false},
		{"price above max", MaxPrice + 1, GPUHour, 0, false},
		{"negative time", Credit, -1, 0, false},
	} {
		got, ok := Cost(tc.price, tc.t)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: Cost(%v, %d) = %v, %v; want %v, %v", tc.name, tc.price, tc.t, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPriceListAndFits(t *testing.T) {
	var free PriceList
	if got := free.Ask("RTX 4090"); got != 0 {
		t.Errorf("zero PriceList.Ask = %v; want 0", got)
	}
	p := PriceList{Default: Credit, Models: map[string]Micro{"H100": 5 * Credit}}
	if got := p.Ask("H100"); got != 5*Credit {
		t.Errorf("Ask(H100) = %v; want 5", got)
	}
	if got := p.Ask("A10"); got != Credit {
		t.Errorf("Ask(A10) = %v; want default 1", got)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	for _, bad := range []PriceList{{Default: -1}, {Models: map[string]Micro{"x": MaxPrice + 1}}} {
		if err := bad.Validate(); !errors.Is(err, ErrPrice) {
			t.Errorf("Validate(%v) = %v; want ErrPrice", bad, err)
		}
	}
	for _, tc := range []struct {
		ask, max Micro
		want     bool
	}{
		{0, 0, true},           // free pool, no limit
		{5 * Credit, 0, true},  // no limit
		{0, Credit, true},      // free node under any limit
		{Credit, Credit, true}, // at the limit
		{2 * Credit, Credit, false},
	} {
		if got := Fits(tc.ask, tc.max); got != tc.want {
			t.Errorf("Fits(%v, %v) = %v; want %v", tc.ask, tc.max, got, tc.want)
		}
	}
}

func TestPriceListSet(t *testing.T) {
	var p PriceList
	for _, flag := range []string{"0.25", "RTX 4090=2", "H100 = 4.5", "RTX 4090=3"} {
		if err := p.Set(flag); err != nil {
			t.Fatalf("Set(%q) = %v", flag, err)
		}
	}
	want := PriceList{Default: Credit / 4, Models: map[string]Micro{"RTX 4090": 3 * Credit, "H100": 4*Credit + Credit/2}}
	if p.Default != want.Default || len(p.Models) != 2 || p.Models["RTX 4090"] != want.Models["RTX 4090"] || p.Models["H100"] != want.Models["H100"] {
		t.Errorf("after Set: %+v; want %+v", p, want)
	}
	for _, bad := range []string{"", "=1", "A10=", "A10=-1", "A10=1e3", "A10=1000.5", "x=1.0000001"} {
		var q PriceList
		if err := q.Set(bad); !errors.Is(err, ErrPrice) {
			t.Errorf("Set(%q) = %v; want ErrPrice", bad, err)
		}
	}
}
