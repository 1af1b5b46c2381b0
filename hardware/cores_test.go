package hardware

import "testing"

func TestCoresPerSM(t *testing.T) {
	tests := []struct {
		cc   string
		want int
		arch string
	}{
		{"2.0", 32, "fermi"},
		{"2.1", 48, "fermi"},
		{"3.0", 192, "kepler"},
		{"3.5", 192, "kepler"},
		{"3.7", 192, "kepler"},
		{"5.0", 128, "maxwell"},
		{"5.2", 128, "maxwell"},
		{"6.0", 64, "pascal"}, // P100
		{"6.1", 128, "pascal"},
		{"6.2", 128, "pascal"},
		{"7.0", 64, "volta"}, // V100
		{"7.2", 64, "volta"}, // Xavier
		{"7.5", 64, "turing"},
		{"8.0", 64, "ampere"}, // A100
		{"8.6", 128, "ampere"},
		{"8.7", 128, "ampere"}, // Orin
		{"8.9", 128, "ada"},
		{"9.0", 128, "hopper"},
		{"10.0", 128, "blackwell"}, // B200
		{"10.3", 128, "blackwell"},
		{"11.0", 128, "blackwell"}, // Thor
		{"12.0", 128, "blackwell"}, // RTX 50
		{"12.1", 128, "blackwell"},
		{"1.3", 0, ""},
		{"8.8", 0, "ampere"},
		{"13.0", 0, ""},
	}
	for _, tt := range tests {
		major, minor, ok := parseCC(tt.cc)
		if !ok {
			t.Fatalf("parseCC(%q) failed; want ok", tt.cc)
		}
		if got := coresPerSM(major, minor); got != tt.want {
			t.Errorf("coresPerSM(%s) = %d; want %d", tt.cc, got, tt.want)
		}
		if got := archForCC(major, minor); got != tt.arch {
			t.Errorf("archForCC(%s) = %q; want %q", tt.cc, got, tt.arch)
		}
	}
	// Known cards: SMs x cores per SM gives their published CUDA core count.
	cards := []struct {
		name  string
		cc    string
		sms   int
		cores int
	}{
		{"RTX 4090", "8.9", 128, 16384},
		{"RTX 3060", "8.6", 28, 3584},
		{"A100", "8.0", 108, 6912},
		{"H100 SXM5", "9.0", 132, 16896},
		{"V100", "7.0", 80, 5120},
		{"T4", "7.5", 40, 2560},
		{"RTX 5090", "12.0", 170, 21760},
	}
	for _, c := range cards {
		major, minor, _ := parseCC(c.cc)
		if got := c.sms * coresPerSM(major, minor); got != c.cores {
			t.Errorf("%s: %d SMs x coresPerSM(%s) = %d; want %d", c.name, c.sms, c.cc, got, c.cores)
		}
	}
}

func TestParseCC(t *testing.T) {
	for _, s := range []string{"", "8", "8.", ".6", "8.6.1", "a.b", "-8.6", "8.-6", "1234.5"} {
		if _, _, ok := parseCC(s); ok {
			t.Errorf("parseCC(%q) ok; want a failure", s)
		}
	}
}

func TestNormalizeBusID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"00000000:17:00.0", "0000:17:00.0"},
		{"0000:17:00.0", "0000:17:00.0"},
		{"00000000:B3:00.0", "0000:b3:00.0"},
		{"00000001:0A:1F.3", "0001:0a:1f.3"},
		{"17:00.0", "0000:17:00.0"},
		{" 0000:17:00.0 ", "0000:17:00.0"},
		{"garbage", "garbage"},
		{"0000:zz:00.0", "0000:zz:00.0"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := normalizeBusID(tt.in); got != tt.want {
			t.Errorf("normalizeBusID(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
