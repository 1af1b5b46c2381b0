package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

// envHelper makes the test binary act as a helper process: the tests re-exec
// it to hold a lock in another process, or to be a spawned daemon.
const envHelper = "SHOAL_NODE_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "":
		os.Exit(m.Run())
	case "lock":
		helperLock(os.Getenv(EnvHome))
	case "daemon":
		helperDaemon(os.Getenv(EnvHome))
	case "fail":
		for i := 1; i <= 30; i++ {
			fmt.Fprintf(os.Stderr, "helper line %d\n", i)
		}
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(envHelper))
		os.Exit(2)
	}
}

// helperLock takes home's lock, says so on stdout and waits to be killed.
func helperLock(home string) {
	if _, err := lockHome(home); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	select {}
}

// helperDaemon runs a daemon on home over an in-memory mesh until SIGTERM
// or a leave request.
func helperDaemon(home string) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := DefaultConfig()
	cfg.Home = home
	cfg.MDNS, cfg.NATPortMap = false, false
	cfg.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	d, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	d.newMesh = func(ctx context.Context, mc mesh.Config) (meshNode, error) {
		id := mustPeerID(mc)
		return newFakeMesh(id), nil
	}
	d.newProber = func([]hardware.GPU, string) prober { return &fakeProber{mode: "none"} }
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func mustPeerID(mc mesh.Config) peer.ID {
	id, err := peer.IDFromPrivateKey(mc.Key)
	if err != nil {
		panic(err)
	}
	return id
}
