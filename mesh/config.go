package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is everything a mesh node needs. Zero values take the defaults of
// DefaultConfig; validate fills them and rejects nonsense.
type Config struct {
	// Key is the node's identity; its peer ID names the node in the pool.
	Key crypto.PrivKey
	// Pool is the secret to prove and the members to join through.
	Pool Pool
	// ListenAddrs are the addresses to listen on. Every one must succeed, or
	// New fails with ErrListen. Default: QUIC and TCP on port 4242, all IPv4
	// interfaces.
	ListenAddrs []multiaddr.Multiaddr
	// ExtraPeers are further members to try when joining (remembered from an
	// earlier run).
	ExtraPeers []peer.AddrInfo
	// Name is a human name for the node (default: the peer ID's tail).
	Name string
	// Version is the software version, published in the node record.
	Version string
	// Price is what the node asks for its GPUs, published in its record
	// (zero: free, the default of a private pool).
	Price Price
	// Fingerprint identifies this copy of the identity (machine and home
	// dir). Two live members with one peer ID and different fingerprints are
	// a copied home dir: the newcomer is refused.
	Fingerprint []byte
	// MDNS finds pool members on the local network by multicast. It sends
	// packets beyond loopback: tests leave it off.
	MDNS bool
	// NATPortMap asks the home router for a port mapping (UPnP, NAT-PMP).
	// It sends packets beyond loopback: tests leave it off.
	NATPortMap bool
	// HeartbeatInterval is how often the node gossips its load and liveness.
	// Shorter detects failures sooner and costs more gossip bytes.
	HeartbeatInterval time.Duration
	// SuspectAfter is the silence after which a member is suspect.
	SuspectAfter time.Duration
	// DeadAfter is the silence after which a member is dead. Failure
	// detection takes about DeadAfter plus one HeartbeatInterval.
	DeadAfter time.Duration
	// PingTimeout is how long a connection to a member that turned suspect
	// or dead may take to answer one ping before it is closed as dead and
	// the member dialled again on its other addresses. Shorter replaces a
	// silently dead connection sooner; too short for the path's round trip
	// under load closes live connections.
	PingTimeout time.Duration
	// ForgetAfter is how long dead and left members stay listed.
	ForgetAfter time.Duration
	// MaxMembersConnected bounds the direct connections opened to members
	// learnt from gossip; beyond it the pool relies on gossip and the DHT.
	MaxMembersConnected int
	// Logger receives the node's log lines (default: slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, receives the mesh's Prometheus metrics.
	Metrics prometheus.Registerer
}

// DefaultConfig is the LAN/desktop profile: one-second heartbeats and death
// declared after six silent seconds.
func DefaultConfig() Config {
	return Config{
		ListenAddrs: []multiaddr.Multiaddr{
			multiaddr.StringCast("/ip4/0.0.0.0/udp/4242/quic-v1"),
			multiaddr.StringCast("/ip4/0.0.0.0/tcp/4242"),
		},
		HeartbeatInterval:   time.Second,
		SuspectAfter:        3 * time.Second,
		DeadAfter:           6 * time.Second,
		PingTimeout:         2 * time.Second,
		ForgetAfter:         time.Hour,
		MaxMembersConnected: 128,
	}
}

// ErrConfig marks a configuration that cannot work.
var ErrConfig = errors.New("mesh: bad config")

func (c *Config) validate() error {
	d := DefaultConfig()
	if c.Key == nil {
		return fmt.Errorf("%w: no identity key", ErrConfig)
	}
	if err := c.Price.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = d.ListenAddrs
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.SuspectAfter == 0 {
		c.SuspectAfter = d.SuspectAfter
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = d.DeadAfter
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = d.PingTimeout
	}
	if c.ForgetAfter == 0 {
		c.ForgetAfter = d.ForgetAfter
	}
	if c.MaxMembersConnected == 0 {
		c.MaxMembersConnected = d.MaxMembersConnected
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.HeartbeatInterval < 10*time.Millisecond:
		return fmt.Errorf("%w: heartbeat interval %s below 10ms", ErrConfig, c.HeartbeatInterval)
	case c.SuspectAfter < 2*c.HeartbeatInterval:
		return fmt.Errorf("%w: suspect-after %s must be at least two heartbeats (%s)", ErrConfig, c.SuspectAfter, 2*c.HeartbeatInterval)
	case c.DeadAfter <= c.SuspectAfter:
		return fmt.Errorf("%w: dead-after %s must exceed suspect-after %s", ErrConfig, c.DeadAfter, c.SuspectAfter)
	case c.PingTimeout < 0:
		return fmt.Errorf("%w: negative ping timeout", ErrConfig)
	case c.ForgetAfter < c.DeadAfter:
		return fmt.Errorf("%w: forget-after %s below dead-after %s", ErrConfig, c.ForgetAfter, c.DeadAfter)
	case c.MaxMembersConnected < 0:
		return fmt.Errorf("%w: negative max members connected", ErrConfig)
	}
	return nil
}
