package market

import (
	"errors"
	"fmt"
)

// Sentinels; test with errors.Is. A rejected receipt changes nothing but the
// ledger's count of rejections.
var (
	// ErrMalformed: bytes that are not a canonical version-1 receipt, or a
	// receipt whose fields contradict themselves (empty IDs, a GPU named
	// twice, an interval that ends before it starts or is longer than the
	// ledger allows).
	ErrMalformed = errors.New("market: malformed receipt")
	// ErrTooLarge: a receipt above MaxReceiptSize.
	ErrTooLarge = errors.New("market: receipt too large")
	// ErrSignature: the signature does not verify under the serving peer's key.
	ErrSignature = errors.New("market: receipt signature invalid")
	// ErrForeignPool: a receipt signed for another pool.
	ErrForeignPool = errors.New("market: receipt is for another pool")
	// ErrReplay: a receipt that reuses a serving node's sequence number.
	ErrReplay = errors.New("market: receipt sequence number reused")
	// ErrOverlap: a receipt whose interval overlaps an accepted receipt for
	// the same replica on the same GPU.
	ErrOverlap = errors.New("market: receipt overlaps an earlier one")
	// ErrAmount: the amount is not the price times the recomputed usage.
	ErrAmount = errors.New("market: receipt amount does not match usage")
	// ErrMilli: a GPU share outside 1..1000 milli-GPU.
	ErrMilli = errors.New("market: milli-GPU out of range")
	// ErrFuture: an interval that ends later than now plus the clock-skew
	// allowance.
	ErrFuture = errors.New("market: receipt interval in the future")
	// ErrOverCapacity: accepting the receipt would bill more GPU time than
	// the serving node has GPUs (a GPU above 1000 milli at some instant, or
	// the node above its declared GPU count).
	ErrOverCapacity = errors.New("market: receipt exceeds the node's declared GPUs")
	// ErrPrice: a price below zero or above MaxPrice.
	ErrPrice = errors.New("market: price out of range")

	// ErrInvalidReplica: a replica the Meter cannot meter (no ID, a GPU
	// share out of range, a price out of range).
	ErrInvalidReplica = errors.New("market: invalid replica")
	// ErrUnknownReplica: a Meter event for a replica it does not meter.
	ErrUnknownReplica = errors.New("market: unknown replica")
	// ErrReplicaExists: Start for a replica the Meter already meters.
	ErrReplicaExists = errors.New("market: replica already metered")
	// ErrInvalidConfig: a configuration that makes no sense.
	ErrInvalidConfig = errors.New("market: invalid config")
)

// Reason names why a receipt was rejected; `shoal credits` counts them.
type Reason string

// Rejection reasons, one per sentinel.
const (
	ReasonMalformed    Reason = "malformed"
	ReasonTooLarge     Reason = "too large"
	ReasonSignature    Reason = "bad signature"
	ReasonForeignPool  Reason = "another pool"
	ReasonReplay       Reason = "sequence number reused"
	ReasonOverlap      Reason = "overlapping interval"
	ReasonAmount       Reason = "amount does not match usage"
	ReasonMilli        Reason = "milli-GPU out of range"
	ReasonFuture       Reason = "interval in the future"
	ReasonOverCapacity Reason = "more GPU time than declared"
	ReasonPrice        Reason = "price out of range"
)

var reasonErr = map[Reason]error{
	ReasonMalformed:    ErrMalformed,
	ReasonTooLarge:     ErrTooLarge,
	ReasonSignature:    ErrSignature,
	ReasonForeignPool:  ErrForeignPool,
	ReasonReplay:       ErrReplay,
	ReasonOverlap:      ErrOverlap,
	ReasonAmount:       ErrAmount,
	ReasonMilli:        ErrMilli,
	ReasonFuture:       ErrFuture,
	ReasonOverCapacity: ErrOverCapacity,
	ReasonPrice:        ErrPrice,
}

// RejectError says why a receipt was refused. It unwraps to the sentinel of
// its Reason.
type RejectError struct {
	Reason Reason
	Detail string
}

func (e *RejectError) Error() string {
	if e.Detail == "" {
		return e.Unwrap().Error()
	}
	return fmt.Sprintf("%v: %s", e.Unwrap(), e.Detail)
}

// Unwrap returns the sentinel for the reason.
func (e *RejectError) Unwrap() error {
	if err, ok := reasonErr[e.Reason]; ok {
		return err
	}
	return ErrMalformed
}

func reject(r Reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of a rejection error, or "" when err is not one.
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	for r, s := range reasonErr {
		if errors.Is(err, s) {
			return r
		}
	}
	return ""
}
