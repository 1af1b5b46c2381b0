package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
)

// Defaults. DefaultConfig and Config.validate are the only places that use them.
const (
	DefaultInventoryInterval = 5 * time.Second
	DefaultJoinTimeout       = 20 * time.Second
	DefaultPeersSaveInterval = 3 * time.Second
	DefaultLeaveTimeout      = 5 * time.Second
	DefaultDrainTimeout      = 10 * time.Second
	DefaultVersion           = "dev"
	DefaultPort              = 4242
	// DefaultCacheBytes is the weight cache's size limit: room for a few
	// 7–70B models without filling a volunteer's disk.
	DefaultCacheBytes = 100 << 30

	// Runtimes (Config.Runtime).
	RuntimeAuto    = "auto"
	RuntimeProcess = "process"
	RuntimeDocker  = "docker"

	// minInventoryInterval keeps a typo (5ns) from turning the probe into a
	// busy loop; NVML queries take milliseconds.
	minInventoryInterval = 100 * time.Millisecond
	maxNameLen           = 63
)

// DefaultListenAddrs are QUIC and TCP on port 4242 of every IPv4 interface.
// QUIC carries control traffic cheaply; TCP is faster for bulk transfer.
func DefaultListenAddrs() []multiaddr.Multiaddr {
	return []multiaddr.Multiaddr{
		multiaddr.StringCast(fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort)),
		multiaddr.StringCast(fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort)),
	}
}

// Config is a daemon's configuration. Start from DefaultConfig: its zero
// value has MDNS and NAT port mapping off. New validates it: zero fields get
// their defaults and nonsense is rejected with ErrInvalidConfig.
type Config struct {
	// Home is the node's data directory (identity, pool, peers, lock,
	// control socket, log). Empty: ResolveHome("") — $SHOAL_HOME,
	// $XDG_DATA_HOME/shoal or ~/.local/share/shoal. Created 0700.
	Home string

	// ListenAddrs are the multiaddrs the libp2p host listens on. Port 0
	// picks a free port. Empty: DefaultListenAddrs (UDP/QUIC and TCP 4242).
	ListenAddrs []multiaddr.Multiaddr

	// GPUs are GPUs the operator declares (--gpu NAME:VRAM[:CUDA_CORES]),
	// for machines where NVML cannot measure them. They are published with
	// source "declared" and stable UUIDs derived from the peer ID.
	GPUs []hardware.GPU

	// GPUFile is a YAML file of declared GPUs (hardware.LoadGPUFile), added
	// after GPUs. Empty: none. Read once, by New.
	GPUFile string

	// MDNS finds pool members on the local network by multicast DNS. It
	// sends packets to the LAN; turn it off where that is unwelcome.
	MDNS bool

	// NATPortMap asks the router (UPnP / NAT-PMP) to forward the listen
	// ports, so peers outside the LAN can dial in.
	NATPortMap bool

	// Name is the human name in this node's record and in `shoal nodes`,
	// at most 63 printable characters. Empty: the hostname.
	Name string

	// InventoryInterval is how often the hardware is probed and the node
	// record updated (free VRAM, utilisation). Shorter is fresher and costs
	// more NVML calls and gossip. Zero: 5s; minimum 100ms.
	InventoryInterval time.Duration

	// JoinTimeout bounds the first Join of the pool at start. Zero: 20s.
	JoinTimeout time.Duration

	// PeersSaveInterval is how often the members' addresses are compared
	// with peers.json, which is rewritten when they changed (and at exit,
	// if they did). Zero: 3s; minimum 1s.
	PeersSaveInterval time.Duration

	// LeaveTimeout bounds the graceful leave at shutdown; after it the node
	// just closes and the others notice it as dead. Zero: 5s.
	LeaveTimeout time.Duration

	// DrainTimeout bounds the drain before a graceful leave: the node takes
	// no new reservation, tells the pool its replicas are stopping so no
	// gateway sends them more, and waits for the requests in flight on
	// them to finish. Longer lets slow requests end; shorter leaves sooner.
	// Zero: 10s.
	DrainTimeout time.Duration

	// CacheBytes is the size limit of the weight cache in <home>/weights,
	// in bytes; least recently used unpinned models are evicted to stay
	// under it. Zero: DefaultCacheBytes; negative: no limit.
	CacheBytes int64

	// Gateway is the TCP address of the OpenAI-compatible gateway, e.g.
	// 127.0.0.1:8080 (port 0 picks a free one; /v1/status tells which).
	// Empty: no client-facing gateway on this node (it still runs replicas
	// and answers what other nodes' gateways forward over the mesh).
	Gateway string

	// APIKeys, when not empty, are the keys a client of this node's
	// gateway must present as "Authorization: Bearer KEY" (the OpenAI
	// clients' api_key), on /v1/..., /d/..., the dashboard's API and
	// /metrics. Requests other members forward over the mesh need none.
	// Keys are never logged nor shown; /v1/status tells how many there are.
	APIKeys []string

	// APIKeysFile is a file of API keys, one per line ('#' starts a
	// comment, blank lines are skipped), added to APIKeys. It must not be
	// readable by others than its owner and group (mode o-r). Read once,
	// by New. Empty: none.
	APIKeysFile string

	// Prices is what this node asks per GPU-hour for each GPU model
	// (--price MODEL=CREDITS); the usage receipts it signs bill its
	// replicas at these prices. The zero value asks nothing: a private
	// pool runs free.
	Prices market.PriceList

	// Runtime chooses how this node runs replicas: RuntimeAuto (a
	// container when a Docker engine answers at start and the template
	// names an image, else a process; a template with both an image and a
	// command runs as a process when the engine lacks the image),
	// RuntimeProcess (always a process: templates need a command) or
	// RuntimeDocker (always a container: the engine must answer at start,
	// templates need an image, and a missing image is pulled). Empty:
	// RuntimeAuto.
	Runtime string

	// Version is the software version published in the record and in
	// /v1/status. Empty: "dev".
	Version string

	// Join, when set, is the pool to join (from mesh.ParseToken); it is
	// written to pool.json. Nil: resume the home's pool, or create a new
	// one (mesh.NewPool) when the home has none.
	Join *mesh.Pool

	// Force lets Join replace a different pool the home already belongs
	// to, forgetting that pool's peers. Only meaningful with Join.
	Force bool

	// Logger receives the daemon's log. Nil: slog.Default().
	Logger *slog.Logger

	// Clock is the daemon's time source. Nil: the system clock.
	Clock Clock
}

// DefaultConfig returns the configuration `shoal up` starts from: MDNS and
// NAT port mapping on, every other field at its default.
func DefaultConfig() Config {
	return Config{
		ListenAddrs:       DefaultListenAddrs(),
		MDNS:              true,
		NATPortMap:        true,
		InventoryInterval: DefaultInventoryInterval,
		JoinTimeout:       DefaultJoinTimeout,
		PeersSaveInterval: DefaultPeersSaveInterval,
		LeaveTimeout:      DefaultLeaveTimeout,
		DrainTimeout:      DefaultDrainTimeout,
		Version:           DefaultVersion,
	}
}

// validate fills zero fields with defaults and rejects nonsense.
func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	home, err := ResolveHome(c.Home)
	if err != nil {
		return err
	}
	c.Home = home

	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = DefaultListenAddrs()
	}
	for i, a := range c.ListenAddrs {
		if a == nil || len(a.Bytes()) == 0 {
			return bad("listen address %d is empty; pass --listen MULTIADDR, e.g. /ip4/0.0.0.0/tcp/4242", i)
		}
	}

	for i, g := range c.GPUs {
		switch {
		case g.Name == "":
			return bad("declared GPU %d has no name; use --gpu NAME:VRAM[:CUDA_CORES]", i)
		case g.VRAMTotalBytes == 0:
			return bad("declared GPU %d (%s) has no VRAM; use --gpu NAME:VRAM[:CUDA_CORES]", i, g.Name)
		case g.VRAMFreeBytes > g.VRAMTotalBytes:
			return bad("declared GPU %d (%s) has more free VRAM (%d B) than total (%d B)", i, g.Name, g.VRAMFreeBytes, g.VRAMTotalBytes)
		case g.CUDACores < 0:
			return bad("declared GPU %d (%s) has %d CUDA cores", i, g.Name, g.CUDACores)
		}
	}

	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "shoal-node"
		}
		c.Name = h
	}
	if len(c.Name) > maxNameLen {
		return bad("name %q is %d bytes long, at most %d", c.Name, len(c.Name), maxNameLen)
	}
	for _, r := range c.Name {
		if !unicode.IsPrint(r) {
			return bad("name %q contains a non-printable character", c.Name)
		}
	}

	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
		min  time.Duration
	}{
		{"inventory interval", &c.InventoryInterval, DefaultInventoryInterval, minInventoryInterval},
		{"join timeout", &c.JoinTimeout, DefaultJoinTimeout, time.Millisecond},
		{"peers save interval", &c.PeersSaveInterval, DefaultPeersSaveInterval, time.Second},
		{"leave timeout", &c.LeaveTimeout, DefaultLeaveTimeout, time.Millisecond},
		{"drain timeout", &c.DrainTimeout, DefaultDrainTimeout, time.Millisecond},
	}
	for _, d := range durations {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < d.min {
			return bad("%s is %v, at least %v", d.name, *d.v, d.min)
		}
	}

	if c.APIKeysFile != "" {
		keys, err := LoadAPIKeys(c.APIKeysFile)
		if err != nil {
			return bad("%v", err)
		}
		c.APIKeys = append(c.APIKeys, keys...)
		c.APIKeysFile = "" // read once
	}
	for i, k := range c.APIKeys {
		if err := checkAPIKey(k); err != nil {
			return bad("API key %d: %v", i+1, err)
		}
	}

	if err := c.Prices.Validate(); err != nil {
		return bad("%v", err)
	}
	switch c.Runtime {
	case "":
		c.Runtime = RuntimeAuto
	case RuntimeAuto, RuntimeProcess, RuntimeDocker:
	default:
		return bad("runtime %q: want %s, %s or %s", c.Runtime, RuntimeAuto, RuntimeProcess, RuntimeDocker)
	}
	if c.Force && c.Join == nil {
		return bad("force only applies when joining a pool with a token")
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	return nil
}

// Clock is the daemon's source of time, injected so tests can step it.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker the daemon uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ t *time.Ticker }

func (t systemTicker) C() <-chan time.Time { return t.t.C }
func (t systemTicker) Stop()               { t.t.Stop() }

// maxAPIKeys and maxAPIKeyLen bound an API keys file: keys are compared
// with every request.
const (
	maxAPIKeys          = 1024
	maxAPIKeyLen        = 512
	maxAPIKeysFileBytes = 1 << 20
)

// LoadAPIKeys reads a file of gateway API keys: one key per line, '#'
// starts a comment, surrounding blanks are trimmed and blank lines
// skipped. The file must name at least one key and must not be readable
// by everyone (a key in a world-readable file is no secret): such a file
// is refused, with the chmod that fixes it.
func LoadAPIKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("API keys file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("API keys file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("API keys file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o004 != 0 {
		return nil, fmt.Errorf("API keys file %s is readable by everyone (mode %04o); run chmod o-r %s (or chmod 600)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAPIKeysFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("API keys file %s: %w", path, err)
	}
	if len(b) > maxAPIKeysFileBytes {
		return nil, fmt.Errorf("API keys file %s is larger than %d bytes", path, maxAPIKeysFileBytes)
	}
	var keys []string
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		k := strings.TrimSpace(line)
		if k == "" || seen[k] {
			continue
		}
		if err := checkAPIKey(k); err != nil {
			return nil, fmt.Errorf("API keys file %s, line %d: %w", path, i+1, err)
		}
		seen[k] = true
		keys = append(keys, k)
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("API keys file %s names no key (one per line, '#' for comments)", path)
	case len(keys) > maxAPIKeys:
		return nil, fmt.Errorf("API keys file %s names %d keys, at most %d", path, len(keys), maxAPIKeys)
	}
	return keys, nil
}

// checkAPIKey rejects what cannot travel in an Authorization header. The
// error never contains the key.
func checkAPIKey(k string) error {
	if k == "" {
		return errors.New("empty key")
	}
	if len(k) > maxAPIKeyLen {
		return fmt.Errorf("key of %d bytes, at most %d", len(k), maxAPIKeyLen)
	}
	for _, r := range k {
		if r <= ' ' || r > '~' {
			return errors.New("key contains a blank, a control or a non-ASCII character")
		}
	}
	return nil
}
