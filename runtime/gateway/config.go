package gateway

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config; validate fills them in.
const (
	DefaultMaxBodyBytes    = 32 << 20
	DefaultQueueSize       = 100
	DefaultQueueTimeout    = 5 * time.Minute
	DefaultScaleUpRetry    = 10 * time.Second
	DefaultRetryAfterFull  = time.Second
	DefaultRetryAfterCold  = 10 * time.Second
	DefaultReportInterval  = time.Second
	DefaultMaxIdlePerPeer  = 64
	DefaultIdleConnTimeout = 90 * time.Second
)

// Config configures a Gateway. The zero value of every optional field means
// its default.
type Config struct {
	// Self is this node's peer ID: replicas whose Node is Self are local.
	// Required.
	Self peer.ID
	// Directory lists the pool's replicas. Required.
	Directory Directory
	// Scaler is asked for a replica when requests wait; nil: requests for a
	// deployment without a ready replica wait for one to appear anyway.
	Scaler Scaler
	// Reporter receives concurrency samples on Tick; nil: none are sent.
	Reporter Reporter
	// Streams opens libp2p streams to other nodes' gateways; nil: only
	// local replicas are reachable (a remote one answers 503).
	Streams StreamOpener
	// Server, when set, serves ProtocolID so that other nodes' gateways can
	// reach this node's replicas. The handler is removed on Close.
	Server StreamServer

	// APIKeys, when not empty, are the keys a client must present as
	// "Authorization: Bearer KEY" (compared in constant time). Requests
	// arriving over libp2p are from pool members and need none.
	APIKeys []string

	// MaxBodyBytes bounds a /v1 request body, which the gateway reads to
	// find "model" (413 beyond). /d/ bodies stream through unread and
	// unbounded. Default 32 MiB.
	MaxBodyBytes int64
	// QueueSize bounds the requests that may wait for one deployment
	// without a ready replica; one more is refused with 429. Default 100.
	QueueSize int
	// QueueTimeout is how long a request waits for a replica before it is
	// answered 503. Covers a cold start: image pull, weight fetch, model
	// load. Default 5 min.
	QueueTimeout time.Duration
	// ScaleUpRetry is how often ScaleUp is called again while requests
	// still wait. Default 10 s.
	ScaleUpRetry time.Duration
	// RetryAfterFull and RetryAfterCold are the Retry-After of a 429 (queue
	// full) and of a 503 (waited past QueueTimeout, or no way to the
	// replica); whole seconds. Defaults 1 s and 10 s.
	RetryAfterFull, RetryAfterCold time.Duration
	// ReportInterval is the sampling interval Run ticks at. Default 1 s.
	ReportInterval time.Duration

	// MaxIdlePerPeer bounds idle keep-alive connections kept per replica
	// endpoint and per remote node (one libp2p stream each). More keeps
	// warm requests from opening streams; each costs a little memory on
	// both ends. Default 64.
	MaxIdlePerPeer int
	// IdleConnTimeout closes an idle keep-alive connection (and its
	// stream). Default 90 s.
	IdleConnTimeout time.Duration

	// Registerer receives the gateway's metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Clock times the concurrency samples; nil: the system clock.
	Clock Clock
	// Seed seeds the replica choice, so a run can be replayed; 0 picks one
	// from Self.
	Seed uint64
	// Logger; nil discards.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Self == "" {
		return fmt.Errorf("%w: Self (this node's peer ID) is required", ErrConfig)
	}
	if c.Directory == nil {
		return fmt.Errorf("%w: Directory is required", ErrConfig)
	}
	for _, k := range c.APIKeys {
		if k == "" {
			return fmt.Errorf("%w: empty API key", ErrConfig)
		}
	}
	for _, d := range []*time.Duration{&c.QueueTimeout, &c.ScaleUpRetry, &c.RetryAfterFull, &c.RetryAfterCold, &c.ReportInterval, &c.IdleConnTimeout} {
		if *d < 0 {
			return fmt.Errorf("%w: negative duration", ErrConfig)
		}
	}
	if c.MaxBodyBytes < 0 || c.QueueSize < 0 || c.MaxIdlePerPeer < 0 {
		return fmt.Errorf("%w: negative limit", ErrConfig)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.QueueTimeout, DefaultQueueTimeout)
	def(&c.ScaleUpRetry, DefaultScaleUpRetry)
	def(&c.RetryAfterFull, DefaultRetryAfterFull)
	def(&c.RetryAfterCold, DefaultRetryAfterCold)
	def(&c.ReportInterval, DefaultReportInterval)
	def(&c.IdleConnTimeout, DefaultIdleConnTimeout)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxIdlePerPeer == 0 {
		c.MaxIdlePerPeer = DefaultMaxIdlePerPeer
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Seed == 0 {
		for _, b := range []byte(c.Self) {
			c.Seed = c.Seed*131 + uint64(b)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}
