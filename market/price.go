package market

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// Micro is an amount of credits in millionths of a credit. Prices, amounts
// and balances are integers so every node that adds the same receipts gets
// the same balances, bit for bit.
type Micro int64

// Credit is one credit in Micro.
const Credit Micro = 1_000_000

// MaxPrice bounds what a node may ask per GPU-hour (1000 credits). With the
// receipt limits (MaxReceiptGPUs, the ledger's longest interval) it keeps
// every amount far from overflowing.
const MaxPrice = 1000 * Credit

// String formats m in credits with six decimals ("1.250000").
func (m Micro) String() string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-m)
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/uint64(Credit), u%uint64(Credit))
}

// Credits is m in credits, for display only: do arithmetic on Micro.
func (m Micro) Credits() float64 { return float64(m) / float64(Credit) }

// ParseCredits reads a decimal number of credits ("2", "0.75", "1.000001")
// into Micro exactly; more than six decimals, signs, exponents and values
// above MaxPrice are refused (this parses prices).
func ParseCredits(s string) (Micro, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" && frac == "" || hasDot && frac == "" || len(frac) > 6 || !digits(whole) || !digits(frac) {
		return 0, fmt.Errorf("%w: %q is not a number of credits with at most six decimals", ErrPrice, s)
	}
	if len(whole) > 7 {
		return 0, fmt.Errorf("%w: %q above %s", ErrPrice, s, MaxPrice)
	}
	w, _ := strconv.ParseInt("0"+whole, 10, 64)
	f, _ := strconv.ParseInt((frac + "000000")[:6], 10, 64)
	m := Micro(w)*Credit + Micro(f)
	if m > MaxPrice {
		return 0, fmt.Errorf("%w: %q above %s", ErrPrice, s, MaxPrice)
	}
	return m, nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// GPUTime is usage in milli-GPU-milliseconds: a whole GPU for one second is
// GPUSecond. Receipts never carry it: it is recomputed from a receipt's
// interval and GPU shares.
type GPUTime int64

// Units of GPUTime.
const (
	GPUSecond GPUTime = 1000 * 1000
	GPUHour   GPUTime = 3600 * GPUSecond
)

// Seconds is t in GPU-seconds, for display.
func (t GPUTime) Seconds() float64 { return float64(t) / float64(GPUSecond) }

// Hours is t in GPU-hours, for display.
func (t GPUTime) Hours() float64 { return float64(t) / float64(GPUHour) }

// Cost is what t of GPU time costs at price per GPU-hour, rounded down to a
// whole Micro. ok is false when price is out of range or t negative, or the
// result would not fit in Micro.
func Cost(price Micro, t GPUTime) (amount Micro, ok bool) {
	if price < 0 || price > MaxPrice || t < 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(uint64(price), uint64(t))
	if hi >= uint64(GPUHour) {
		return 0, false
	}
	q, _ := bits.Div64(hi, lo, uint64(GPUHour))
	if q > 1<<62 {
		return 0, false
	}
	return Micro(q), true
}

// PriceList is what a node asks per GPU-hour, per GPU model. A model not
// listed costs Default. The zero PriceList asks nothing: a private pool runs
// free.
type PriceList struct {
	// Default is the price of a GPU-hour on a model not in Models.
	Default Micro `json:"default_micro,omitempty"`
	// Models maps a GPU model name (as the inventory reports it, "RTX 4090")
	// to its price per GPU-hour.
	Models map[string]Micro `json:"models_micro,omitempty"`
}

// Ask is the price per GPU-hour of one GPU of model.
func (p PriceList) Ask(model string) Micro {
	if m, ok := p.Models[model]; ok {
		return m
	}
	return p.Default
}

// Validate refuses negative prices and prices above MaxPrice.
func (p PriceList) Validate() error {
	if p.Default < 0 || p.Default > MaxPrice {
		return fmt.Errorf("%w: default %s", ErrPrice, p.Default)
	}
	for model, m := range p.Models {
		if m < 0 || m > MaxPrice {
			return fmt.Errorf("%w: %q asks %s", ErrPrice, model, m)
		}
	}
	return nil
}

// Fits reports whether a node asking ask per GPU-hour is within a
// deployment's limit max; a limit of 0 means no limit (as in the
// scheduler's Request.MaxPrice), so a free pool never refuses.
func Fits(ask, max Micro) bool {
	return max <= 0 || ask <= max
}

// Set reads one price flag into p: "MODEL=CREDITS" prices GPU model MODEL
// (as the inventory names it, "RTX 4090=0.5"); a bare "CREDITS" sets the
// Default for every model not named. Credits are per GPU-hour, parsed by
// ParseCredits. A model named twice keeps the last price.
func (p *PriceList) Set(flag string) error {
	model, credits, named := strings.Cut(flag, "=")
	if !named {
		model, credits = "", flag
	}
	model = strings.TrimSpace(model)
	if named && model == "" {
		return fmt.Errorf("%w: %q names no GPU model; write MODEL=CREDITS or CREDITS", ErrPrice, flag)
	}
	m, err := ParseCredits(strings.TrimSpace(credits))
	if err != nil {
		return err
	}
	if !named {
		p.Default = m
		return nil
	}
	if p.Models == nil {
		p.Models = map[string]Micro{}
	}
	p.Models[model] = m
	return nil
}
