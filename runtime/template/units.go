package template

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Bytes is a size in bytes, written in YAML as a plain number of bytes or
// with a unit: KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB
// (powers of 1000), e.g. "16GiB" or "1.5GB".
type Bytes int64

var byteUnits = []struct {
	suffix string
	size   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

func (b *Bytes) decodeScalar(s string) error {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		*b = Bytes(n)
		return nil
	}
	for _, u := range byteUnits {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || f < 0 || math.IsNaN(f) || f*u.size > math.MaxInt64/2 {
			break
		}
		*b = Bytes(math.Round(f * u.size))
		return nil
	}
	return fmt.Errorf("want a size like 16GiB, 512MiB or a number of bytes, got %q", s)
}

// MiB returns b in MiB, rounded up.
func (b Bytes) MiB() int64 { return (int64(b) + (1 << 20) - 1) >> 20 }

// String writes b with the largest binary unit that divides it.
func (b Bytes) String() string {
	for _, u := range []struct {
		s string
		n int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.n == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.n, u.s)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalText writes the same form String does.
func (b Bytes) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// Duration is a time span written like "30s", "10m" or "1h30m".
type Duration time.Duration

func (d *Duration) decodeScalar(s string) error {
	x, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || x < 0 {
		return fmt.Errorf("want a duration like 30s or 10m, got %q", s)
	}
	*d = Duration(x)
	return nil
}

// MarshalText writes the duration as time.Duration does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
