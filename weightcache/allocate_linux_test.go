package weightcache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// A download the disk cannot hold fails as it starts, before a byte is
// fetched: the partial file's blocks are reserved when it is opened.
func TestDiskTooSmallFailsAtStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=2m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	nodes := meshtest.Pool(t, 2, meshtest.Fast)
	_, id, _ := seed(t, nodes[0], 4<<20)
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s, err := Open(Config{Dir: filepath.Join(dir, "weights"), ChunkSize: minChunkSize, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := fetcher(t, s, nodes[1], &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}, FetchConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := f.Fetch(ctx, id, nil)
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Fetch onto a 2 MiB disk = %v; want ErrDiskFull", err)
	}
	if !strings.Contains(err.Error(), "model.safetensors") || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("error %q; want the file it could not reserve and the system's reason", err)
	}
	if st.FetchedBytes != 0 {
		t.Fatalf("fetched %d bytes before finding the disk too small", st.FetchedBytes)
	}
}
