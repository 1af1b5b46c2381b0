package main

import (
	"strings"
	"testing"
)

func TestParseCacheSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"100GiB", 100 << 30, true},
		{"1.5 TB", 1_500_000_000_000, true},
		{"512MiB", 512 << 20, true},
		{"4096", 4096, true},
		{"0", -1, true},
		{"0GiB", -1, true},
		{"", 0, false},
		{"-1GiB", 0, false},
		{"10 parsecs", 0, false},
		{"GiB", 0, false},
	}
	for _, c := range cases {
		got, err := parseCacheSize(c.in)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("parseCacheSize(%q) = %d, %v; want %d, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

// Usage errors of `shoal weights` exit 2 before any daemon is asked.
func TestWeightsUsageErrors(t *testing.T) {
	home := t.TempDir()
	sum := strings.Repeat("ab", 32)
	cases := [][]string{
		{"weights", "add"},
		{"weights", "pull"},
		{"weights", "path", "a", "b"},
		{"weights", "rm"},
		{"weights", "ls", "extra"},
		{"weights", "add", home + "/does-not-exist"},
		{"weights", "add", "https://h/a.bin", "--sha256", "xyz"},
		{"weights", "add", "https://h/a.bin", "https://h/b.bin", "--sha256", sum},
		{"weights", "add", "https://h/a.bin", "not-a-url"},
		{"weights", "add", home, "--sha256", sum},
		{"weights", "add", "--hf", "not a url", "config.json"},
		{"up", "--cache-size", "lots"},
	}
	for _, args := range cases {
		code, _, stderr := shoal(t, append([]string{"--home", home}, args...)...)
		if code != exitUsage {
			t.Errorf("shoal %s = exit %d (%s); want %d", strings.Join(args, " "), code, strings.TrimSpace(stderr), exitUsage)
		}
	}
}
