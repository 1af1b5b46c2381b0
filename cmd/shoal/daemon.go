package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/node"
)

// envDetached marks the child that `--detach` starts, for its log.
const envDetached = "SHOAL_DETACHED"

// daemonFlags are the flags `up` and `join` share.
type daemonFlags struct {
	detach  bool
	listen  []string
	gpus    []string
	gpuFile string
	mdns    bool
	nat     bool
	name    string
	force   bool // join only
	joinFor time.Duration
	cache   string
	gateway string
	runtime string
	prices  []string
	apiKeys string
}

func (f *daemonFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.BoolVar(&f.detach, "detach", false, "run the daemon in the background (output to HOME/daemon.log) and return once it is ready")
	fs.StringArrayVar(&f.listen, "listen", nil, "multiaddr to listen on, repeatable; port 0 picks a free port (default /ip4/0.0.0.0/udp/4242/quic-v1 and /ip4/0.0.0.0/tcp/4242)")
	fs.StringArrayVar(&f.gpus, "gpu", nil, "declare a GPU NVML cannot see, as NAME:VRAM[:CUDA_CORES] (e.g. \"RTX 4090:24GiB:16384\"), repeatable")
	fs.StringVar(&f.gpuFile, "gpu-file", "", "YAML file of declared GPUs")
	fs.BoolVar(&f.mdns, "mdns", true, "find pool members on the local network by multicast DNS")
	fs.BoolVar(&f.nat, "nat", true, "ask the router to forward the listen ports (UPnP / NAT-PMP)")
	fs.StringVar(&f.name, "name", "", "name of this node in the pool (default the hostname)")
	fs.DurationVar(&f.joinFor, "join-timeout", node.DefaultJoinTimeout, "how long to try the pool's known members at start; `up` then runs alone (mDNS or members dialling in can still find it), `join` fails")
	fs.StringVar(&f.cache, "cache-size", "100GiB", "size limit of the weight cache (HOME/weights), e.g. 500GiB or 2TB; least recently used unpinned models are evicted beyond it; 0: no limit")
	fs.StringVar(&f.gateway, "gateway", "127.0.0.1:8080", "address of the OpenAI-compatible gateway (/v1/models, /v1/chat/completions, ...); port 0 picks a free one (`shoal status` shows it); off: no gateway on this node")
	fs.StringArrayVar(&f.prices, "price", nil, "what this node asks per GPU-hour, in credits: MODEL=CREDITS for one GPU model (e.g. \"RTX 4090=0.5\"), or CREDITS for every model not named; repeatable (default 0: free)")
	fs.StringVar(&f.runtime, "runtime", node.RuntimeAuto, "how replicas run: auto (in a container when a Docker engine answers and the template names an image, else as a process), process, or docker")
	fs.StringVar(&f.apiKeys, "api-keys-file", "", "file of API keys the gateway requires (Authorization: Bearer KEY) on /v1, /d, the dashboard's API and /metrics: one key per line, # for comments; must not be readable by everyone (chmod 600)")
	cmd.MarkFlagFilename("gpu-file", "yaml", "yml")
	cmd.MarkFlagFilename("api-keys-file")
}

// config turns the flags into a node.Config; bad values are usage errors.
func (f *daemonFlags) config(a *app) (node.Config, error) {
	cfg := node.DefaultConfig()
	cfg.Home = a.home
	cfg.MDNS = f.mdns
	cfg.NATPortMap = f.nat
	cfg.Name = f.name
	if f.joinFor <= 0 {
		return cfg, usagef("--join-timeout %v: must be positive", f.joinFor)
	}
	cfg.JoinTimeout = f.joinFor
	cfg.GPUFile = f.gpuFile
	cfg.APIKeysFile = f.apiKeys
	cfg.Version = version
	cache, err := parseCacheSize(f.cache)
	if err != nil {
		return cfg, usagef("--cache-size %q: %v", f.cache, err)
	}
	cfg.CacheBytes = cache
	switch f.runtime {
	case node.RuntimeAuto, node.RuntimeProcess, node.RuntimeDocker:
		cfg.Runtime = f.runtime
	default:
		return cfg, usagef("--runtime %q: want auto, process or docker", f.runtime)
	}
	switch f.gateway {
	case "off", "":
	default:
		if _, _, err := net.SplitHostPort(f.gateway); err != nil {
			return cfg, usagef("--gateway %q: want HOST:PORT or off (%v)", f.gateway, err)
		}
		cfg.Gateway = f.gateway
	}
	if len(f.listen) > 0 {
		cfg.ListenAddrs = nil
		for _, s := range f.listen {
			ma, err := multiaddr.NewMultiaddr(s)
			if err != nil {
				return cfg, usagef("--listen %q is not a multiaddr (%v); write it like /ip4/0.0.0.0/tcp/4242", s, err)
			}
			cfg.ListenAddrs = append(cfg.ListenAddrs, ma)
		}
	}
	for _, s := range f.prices {
		if err := cfg.Prices.Set(s); err != nil {
			return cfg, usagef("--price %q: %v", s, err)
		}
	}
	for _, s := range f.gpus {
		g, err := hardware.ParseGPUSpec(s)
		if err != nil {
			return cfg, usagef("--gpu %q: %w", s, err)
		}
		cfg.GPUs = append(cfg.GPUs, g)
	}
	return cfg, nil
}

func (a *app) upCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a new pool on this machine, or resume this home's pool",
		Long: `Start the shoal daemon. On a home that belongs to no pool yet, it creates a new
pool; on a home that has one, it resumes it (and says so). It prints the
command that adds another machine: 'shoal join TOKEN'.

In the foreground the join command goes to stdout and the log to stderr; stop
with Ctrl-C (the node leaves the pool gracefully). With --detach the daemon
runs in the background, logging to HOME/daemon.log, and 'shoal up' returns
once it is ready; stop it with 'shoal leave'.

A machine without an NVIDIA driver can declare its GPUs with --gpu or
--gpu-file; they are published as "declared", never as measured.`,
		Example: `  # start a pool in the foreground
  shoal up

  # in the background, on other ports, with a name
  shoal up --detach --listen /ip4/0.0.0.0/udp/5000/quic-v1 --listen /ip4/0.0.0.0/tcp/5000 --name lab-1

  # a laptop without NVML, declaring its GPU
  shoal up --gpu "RTX 4090:24GiB:16384" --mdns=false --nat=false`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(a)
			if err != nil {
				return err
			}
			return a.runDaemon(cmd.Context(), cfg, f.detach)
		},
	}
	f.register(cmd)
	return cmd
}

func (a *app) joinCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "join TOKEN",
		Short: "Join this machine to a pool with a token from 'shoal up' or 'shoal token'",
		Long: `Start the shoal daemon and join the pool the token names. The token comes from
'shoal up' on the first machine, or from 'shoal token' on any member.

The token is checked before anything starts: a mistyped, truncated or foreign
token fails at once. A home that already belongs to another pool is refused
unless --force (which forgets that pool). Flags are those of 'shoal up'.`,
		Example: `  # join in the foreground
  shoal join shoal1.7Kq...

  # join in the background with a declared GPU
  shoal join --detach --gpu "A100:80GiB:6912" shoal1.7Kq...

  # move this home from its old pool to another one
  shoal join --force shoal1.9Xz...`,
		Args: exactArgs(1, "one argument, the join TOKEN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, err := mesh.ParseToken(strings.TrimSpace(args[0]))
			if err != nil {
				return usagef("invalid join token: %w; copy the whole token again from `shoal token` on a pool member", err)
			}
			cfg, err := f.config(a)
			if err != nil {
				return err
			}
			cfg.Join = &pool
			cfg.Force = f.force
			return a.runDaemon(cmd.Context(), cfg, f.detach)
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&f.force, "force", false, "join even if this home belongs to another pool (forgets that pool)")
	return cmd
}

// runDaemon runs the daemon in the foreground, or starts it in the
// background and waits until it is ready.
func (a *app) runDaemon(ctx context.Context, cfg node.Config, detach bool) error {
	if detach {
		return a.detach(ctx, cfg)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(a.stderr, nil))
	detachedChild := os.Getenv(envDetached) != ""
	if detachedChild {
		cfg.Logger.Info("running detached", "pid", os.Getpid())
	}
	d, err := node.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	select {
	case <-d.Ready():
		info := d.Info()
		a.printStarted(started{
			PoolID: info.PoolID, PeerID: info.PeerID.String(), Token: info.Token,
			Home: info.Home, PID: os.Getpid(), Resumed: info.Resumed, Created: info.Created,
			Joined: cfg.Join != nil,
		}, detachedChild)
		return <-errc
	case err := <-errc:
		return err
	}
}

// detach re-runs this command line without --detach as a daemon in a new
// session, then reports it once it is ready.
func (a *app) detach(ctx context.Context, cfg node.Config) error {
	// Configuration errors are reported here, not in a log file.
	d, err := node.New(cfg)
	if err != nil {
		return err
	}
	// Ctrl-C while waiting stops the half-started daemon (Spawn does that
	// when its ctx ends) instead of leaving it behind.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	env := append(os.Environ(), envDetached+"=1")
	st, err := node.Spawn(ctx, node.SpawnConfig{Home: d.Home(), Args: withoutDetach(a.args), Env: env})
	var se *node.StartError
	if errors.As(err, &se) {
		for _, line := range se.LogTail {
			fmt.Fprintln(a.stderr, line)
		}
	}
	if err != nil {
		return err
	}
	token, err := node.NewClient(d.Home()).Token(ctx)
	if err != nil {
		return err
	}
	a.printStarted(started{
		PoolID: st.PoolID, PeerID: st.PeerID, Token: token, Home: st.Home, PID: st.PID,
		Resumed: st.Resumed, Created: cfg.Join == nil && !st.Resumed, Joined: cfg.Join != nil,
	}, true)
	return nil
}

// started is what `up` and `join` print once the daemon is ready.
type started struct {
	PoolID      string `json:"pool_id"`
	PeerID      string `json:"peer_id"`
	Token       string `json:"token"`
	JoinCommand string `json:"join_command"`
	Home        string `json:"home"`
	PID         int    `json:"pid"`
	Resumed     bool   `json:"resumed"`
	Created     bool   `json:"created"`
	Joined      bool   `json:"-"`
	Detached    bool   `json:"detached"`
}

func (a *app) printStarted(s started, detached bool) {
	s.JoinCommand = "shoal join " + s.Token
	s.Detached = detached
	if a.json() {
		a.printJSON(s)
		return
	}
	switch {
	case s.Created:
		fmt.Fprintf(a.stderr, "Started a new pool %s on this machine (node %s).\n", s.PoolID, s.PeerID)
	case s.Joined && !s.Resumed:
		fmt.Fprintf(a.stderr, "Joined pool %s (node %s).\n", s.PoolID, s.PeerID)
	default:
		fmt.Fprintf(a.stderr, "Resumed pool %s from %s (node %s).\n", s.PoolID, s.Home, s.PeerID)
	}
	fmt.Fprintln(a.stderr, "To add a machine to the pool, run on it:")
	fmt.Fprintln(a.stdout, s.JoinCommand)
	if detached {
		fmt.Fprintf(a.stderr, "The daemon runs in the background (pid %d, log %s); stop it with `shoal leave`.\n",
			s.PID, filepath.Join(s.Home, node.LogFile))
	} else {
		fmt.Fprintln(a.stderr, "Press Ctrl-C to leave the pool and stop.")
	}
}

// withoutDetach drops --detach (in any spelling) from a command line, up to
// a "--" terminator.
func withoutDetach(args []string) []string {
	out := make([]string, 0, len(args))
	for i, s := range args {
		if s == "--" {
			return append(out, args[i:]...)
		}
		if s == "--detach" || strings.HasPrefix(s, "--detach=") {
			continue
		}
		out = append(out, s)
	}
	return out
}
