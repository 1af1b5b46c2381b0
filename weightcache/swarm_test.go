package weightcache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// The mesh node is what the daemon hands the store, fetcher and server.
var (
	_ Dialer    = (*mesh.Node)(nil)
	_ Finder    = (*mesh.Node)(nil)
	_ Announcer = (*mesh.Node)(nil)
	_ Registrar = (*mesh.Node)(nil)
)

// scriptedFinder answers the k-th lookup with script[k] (the last entry
// once the script runs out), so a test decides who is tried first.
type scriptedFinder struct {
	mu     sync.Mutex
	calls  int
	script [][]*mesh.Node
}

func (f *scriptedFinder) FindProviders(ctx context.Context, key string, max int) ([]peer.AddrInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	nodes := f.script[min(f.calls, len(f.script)-1)]
	f.calls++
	var out []peer.AddrInfo
	for _, n := range nodes {
		out = append(out, peer.AddrInfo{ID: n.ID(), Addrs: n.Addrs()})
	}
	return out, nil
}

// seed makes a store on n holding a random model of size bytes in
// 64 KiB chunks, serves it, and returns the store, the ID and the bytes.
func seed(t *testing.T, n *mesh.Node, size int) (*Store, string, []byte) {
	t.Helper()
	s := newStore(t, 0)
	data := randBytes(uint64(size), size)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "config.json"), []byte(`{"a":1}`))
	writeFile(t, filepath.Join(src, "model.safetensors"), data)
	id, err := s.Add(context.Background(), src, "")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s, n)
	return s, id, data
}

func serve(t *testing.T, s *Store, n *mesh.Node) {
	srv := Serve(s, n)
	t.Cleanup(func() { _ = srv.Close() })
}

func checkModel(t *testing.T, s *Store, id string, data []byte) {
	t.Helper()
	dir, err := s.Path(id)
	if err != nil {
		t.Fatalf("Path(%s) = %v", id, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetched model differs (%d bytes, %v)", len(got), err)
	}
	if err := s.Verify(context.Background(), id, nil); err != nil {
		t.Fatal(err)
	}
}

func fetcher(t *testing.T, s *Store, n *mesh.Node, find Finder, cfg FetchConfig) *Fetcher {
	t.Helper()
	var ann Announcer
	if find == nil {
		find, ann = n, n
	}
	f, err := NewFetcher(s, n, find, ann, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSwarmOneSeederFourFetchers(t *testing.T) {
	nodes := meshtest.Pool(t, 5, meshtest.Fast)
	_, id, data := seed(t, nodes[0], 2<<20+12345)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := nodes[0].Provide(ctx, id); err != nil {
		t.Fatal(err)
	}
	for i, st := range fetchEverywhere(t, nodes[1:], id, data, func(s *Store, n *mesh.Node) { serve(t, s, n) }, FetchConfig{Refresh: 200 * time.Millisecond}) {
		t.Logf("fetcher %d: %+v", i, st)
	}
}

// fetchEverywhere gives each of nodes a store, served by serveOn, and
// fetches id into all of them at once; each must end holding data. It
// returns each fetch's stats.
func fetchEverywhere(t *testing.T, nodes []*mesh.Node, id string, data []byte, serveOn func(*Store, *mesh.Node), cfg FetchConfig) []FetchStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stores := make([]*Store, len(nodes))
	stats := make([]FetchStats, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		stores[i] = newStore(t, 0)
		serveOn(stores[i], n)
		f := fetcher(t, stores[i], n, nil, cfg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			stats[i], errs[i] = f.Fetch(ctx, id, nil)
		}()
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("fetcher %d: %v", i, errs[i])
		}
		checkModel(t, s, id, data)
	}
	return stats
}

// serveScripted serves the weights protocol on n for a test: the manifest
// mb to a manifest request, and chunk sessions by chunks once the
// fetcher's have-map is read (the stream is reset when chunks returns).
func serveScripted(n *mesh.Node, mb []byte, chunks func(s network.Stream, r *bufio.Reader)) {
	m, err := DecodeManifest(mb)
	if err != nil {
		panic(err)
	}
	nc := len(newLayout(m).chunks)
	n.Handle(Protocol, func(s network.Stream) {
		r := bufio.NewReader(s)
		h, err := readHello(r)
		if err != nil {
			_ = s.Reset()
			return
		}
		if h.op == opManifest {
			_ = writeFrame(s, frManifest, 0, mb)
			_ = s.Close()
			return
		}
		defer s.Reset()
		if _, err := readHaveMap(r, nc); err != nil {
			return
		}
		chunks(s, r)
	})
}

// readRequest reads fetcher messages up to the next chunk request,
// skipping haves.
func readRequest(r io.Reader, n int) (int, error) {
	var b [requestLen]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, err
		}
		m, err := decodeClientMsg(b[:], n)
		if err != nil {
			return 0, err
		}
		if m.typ == opRequest {
			return m.i, nil
		}
	}
}

// evil serves a model it claims to hold whole but answers chunk requests
// with flipped bytes (or, with stall, never answers them).
func evil(t *testing.T, n *mesh.Node, src *Store, id string, stall bool) {
	m, _ := src.Manifest(id)
	l := newLayout(m)
	mb, _ := src.ManifestBytes(id)
	serveScripted(n, mb, func(s network.Stream, r *bufio.Reader) {
		all := make([]bool, len(l.chunks))
		for i := range all {
			all[i] = true
		}
		_ = writeFrame(s, frHaveMap, uint32(len(l.chunks)), encodeHaveMap(all))
		for {
			i, err := readRequest(r, len(l.chunks))
			if err != nil {
				return
			}
			if stall {
				continue
			}
			data := randBytes(uint64(i), l.chunks[i].n)
			if err := writeFrame(s, frData, uint32(i), data); err != nil {
				return
			}
		}
	})
}

func TestSwarmCorruptPeerBannedAndRoutedAround(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	src, id, data := seed(t, nodes[0], 3<<20)
	evil(t, nodes[1], src, id, false)
	s := newStore(t, 0)
	// The liar is the only provider at first, then the honest seeder appears.
	find := &scriptedFinder{script: [][]*mesh.Node{{nodes[1]}, {nodes[1]}, {nodes[1], nodes[0]}}}
	f := fetcher(t, s, nodes[2], find, FetchConfig{Refresh: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := f.Fetch(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkModel(t, s, id, data)
	if !slices.Contains(f.Banned(id), nodes[1].ID()) {
		t.Fatalf("Banned(%s) = %v; want the corrupt peer %s", id, f.Banned(id), nodes[1].ID())
	}
	if slices.Contains(f.Banned(id), nodes[0].ID()) {
		t.Fatal("honest seeder banned")
	}
	if st.WastedBytes == 0 {
		t.Fatalf("stats %+v: no bad chunk was received", st)
	}
}

func TestSwarmBadManifestRejected(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	_, id, data := seed(t, nodes[0], 1<<20)
	// A peer answering with some other model's manifest.
	other := newStore(t, 0)
	oid := addRandom(t, other, 99, 1000)
	ob, _ := other.ManifestBytes(oid)
	nodes[1].Handle(Protocol, func(s network.Stream) {
		defer s.Close()
		if _, err := readHello(bufio.NewReader(s)); err == nil {
			_ = writeFrame(s, frManifest, 0, ob)
		}
	})
	s := newStore(t, 0)
	find := &scriptedFinder{script: [][]*mesh.Node{{nodes[1], nodes[0]}}}
	f := fetcher(t, s, nodes[2], find, FetchConfig{Refresh: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := f.Fetch(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	checkModel(t, s, id, data)
	if !slices.Contains(f.Banned(id), nodes[1].ID()) {
		t.Fatalf("peer with a foreign manifest not banned: %v", f.Banned(id))
	}
	// Only liars: the fetch fails with a clear error and nothing is stored.
	s2 := newStore(t, 0)
	f2 := fetcher(t, s2, nodes[2], &scriptedFinder{script: [][]*mesh.Node{{nodes[1]}}}, FetchConfig{})
	if _, err := f2.Fetch(ctx, id, nil); !errors.Is(err, ErrNoProviders) || !errors.Is(err, ErrManifestMismatch) {
		t.Fatalf("Fetch from liars only = %v; want ErrNoProviders with ErrManifestMismatch", err)
	}
	if _, err := s2.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("model recorded after a failed manifest fetch: %v", err)
	}
}

func TestSwarmStalledPeerDropped(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	src, id, data := seed(t, nodes[0], 2<<20)
	evil(t, nodes[1], src, id, true)
	s := newStore(t, 0)
	find := &scriptedFinder{script: [][]*mesh.Node{{nodes[1]}, {nodes[1], nodes[0]}}}
	f := fetcher(t, s, nodes[2], find, FetchConfig{StallTimeout: 300 * time.Millisecond, Refresh: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := f.Fetch(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	checkModel(t, s, id, data)
	if len(f.Banned(id)) != 0 {
		t.Fatalf("a stalled peer is dropped, not banned: %v", f.Banned(id))
	}
	// With only the staller, the fetch ends with a clear error.
	s2 := newStore(t, 0)
	f2 := fetcher(t, s2, nodes[2], &scriptedFinder{script: [][]*mesh.Node{{nodes[1]}}}, FetchConfig{StallTimeout: 300 * time.Millisecond, Refresh: 100 * time.Millisecond})
	if _, err := f2.Fetch(ctx, id, nil); !errors.Is(err, ErrNoProviders) {
		t.Fatalf("Fetch from a staller = %v; want ErrNoProviders", err)
	}
	if info, _ := s2.Stat(id); info.State != StatePartial {
		t.Fatalf("state %q; want partial", info.State)
	}
}

func TestSwarmResumeDoesNotRefetch(t *testing.T) {
	nodes := meshtest.Pool(t, 2, meshtest.Fast)
	_, id, data := seed(t, nodes[0], 4<<20)
	s := newStore(t, 0)
	find := &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}
	f := fetcher(t, s, nodes[1], find, FetchConfig{Pipeline: 2})
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	_, err := f.Fetch(ctx, id, func(p Progress) {
		if p.DoneBytes >= p.TotalBytes/2 {
			once.Do(cancel)
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first Fetch = %v; want context.Canceled", err)
	}
	if info, _ := s.Stat(id); info.State != StatePartial {
		t.Fatalf("state after cancel %q; want partial", info.State)
	}
	// A new process: reopen the store from disk.
	s2, err := Open(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f2 := fetcher(t, s2, nodes[1], find, FetchConfig{})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	st, err := f2.Fetch(ctx2, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s2.Manifest(id)
	total := m.Size()
	if st.ResumedBytes < total/2 {
		t.Fatalf("resumed %d of %d bytes; want at least half", st.ResumedBytes, total)
	}
	if st.FetchedBytes != total-st.ResumedBytes {
		t.Fatalf("fetched %d bytes after resuming %d of %d; want exactly the rest (%d)", st.FetchedBytes, st.ResumedBytes, total, total-st.ResumedBytes)
	}
	checkModel(t, s2, id, data)
}

func TestSwarmDiskFullThenResume(t *testing.T) {
	nodes := meshtest.Pool(t, 2, meshtest.Fast)
	_, id, data := seed(t, nodes[0], 3<<20)
	s := newStore(t, 0)
	var left atomic.Int64
	left.Store(1 << 20)
	s.SetWriteHook(func(n int) error {
		if left.Add(-int64(n)) < 0 {
			return syscall.ENOSPC
		}
		return nil
	})
	find := &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}
	f := fetcher(t, s, nodes[1], find, FetchConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := f.Fetch(ctx, id, nil); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Fetch on a full disk = %v; want ErrDiskFull", err)
	}
	if info, _ := s.Stat(id); info.State != StatePartial {
		t.Fatalf("state %q; want partial", info.State)
	}
	if _, err := s.Path(id); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Path = %v; want ErrIncomplete", err)
	}
	s.SetWriteHook(nil)
	st, err := f.Fetch(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.ResumedBytes == 0 {
		t.Fatalf("nothing resumed after the disk filled: %+v", st)
	}
	checkModel(t, s, id, data)
}

// gatedSeeder serves src's model honestly on n, but sends each chunk only
// after the test puts a token in gate.
func gatedSeeder(t *testing.T, n *mesh.Node, src *Store, id string, gate chan struct{}) {
	mb, _ := src.ManifestBytes(id)
	serveScripted(n, mb, func(s network.Stream, r *bufio.Reader) {
		p, err := src.openReader(id)
		if err != nil {
			return
		}
		defer p.release()
		nc := len(p.l.chunks)
		_ = writeFrame(s, frHaveMap, uint32(nc), p.bitfield())
		buf := make([]byte, p.l.m.ChunkSize)
		for {
			i, err := readRequest(r, nc)
			if err != nil {
				return
			}
			<-gate
			data, err := p.read(i, buf)
			if err != nil || writeFrame(s, frData, uint32(i), data) != nil {
				return
			}
		}
	})
}

func TestSwarmServesWhileDownloading(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	src, id, data := seed(t, nodes[0], 1<<20) // 16 chunks + config.json
	nodes[0].RemoveHandler(Protocol)
	gate := make(chan struct{}, 64)
	gatedSeeder(t, nodes[0], src, id, gate)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A downloads from the gated seeder and serves as it goes.
	sa := newStore(t, 0)
	serve(t, sa, nodes[1])
	fa := fetcher(t, sa, nodes[1], &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}, FetchConfig{})
	var got atomic.Int64
	aDone := make(chan error, 1)
	go func() {
		_, err := fa.Fetch(ctx, id, func(p Progress) { got.Store(p.DoneBytes) })
		aDone <- err
	}()
	for range 5 {
		gate <- struct{}{}
	}
	if !meshtest.Eventually(20*time.Second, func() bool { return got.Load() >= 4*minChunkSize }) {
		t.Fatalf("A got %d bytes from the seeder", got.Load())
	}
	// B knows only A, which holds a few chunks and is still downloading.
	sb := newStore(t, 0)
	fb := fetcher(t, sb, nodes[2], &scriptedFinder{script: [][]*mesh.Node{{nodes[1]}}}, FetchConfig{Refresh: time.Minute})
	var bGot atomic.Int64
	bDone := make(chan error, 1)
	var bStats FetchStats
	go func() {
		var err error
		bStats, err = fb.Fetch(ctx, id, func(p Progress) { bGot.Store(p.DoneBytes) })
		bDone <- err
	}()
	if !meshtest.Eventually(20*time.Second, func() bool { return bGot.Load() >= 4*minChunkSize }) {
		t.Fatalf("B got %d bytes from the half-done A", bGot.Load())
	}
	close(gate) // the seeder lets the rest through; A's new chunks reach B as they land
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	checkModel(t, sa, id, data)
	checkModel(t, sb, id, data)
	if bStats.Peers != 1 || bStats.FetchedBytes < int64(len(data)) {
		t.Fatalf("B: %+v; want everything from A alone", bStats)
	}
}

// TestSwarmFetcherLearnsPeerThatAsksIt: A's lookups name only the seeder
// and B's only A, but B asks A for the model, so A takes B as a source at
// once.
func TestSwarmFetcherLearnsPeerThatAsksIt(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	src, id, data := seed(t, nodes[0], 1<<20)
	nodes[0].RemoveHandler(Protocol)
	gate := make(chan struct{}, 64)
	gatedSeeder(t, nodes[0], src, id, gate)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sa := newStore(t, 0)
	serve(t, sa, nodes[1])
	fa := fetcher(t, sa, nodes[1], &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}, FetchConfig{Refresh: time.Minute})
	var got atomic.Int64
	aDone := make(chan error, 1)
	var aStats FetchStats
	go func() {
		var err error
		aStats, err = fa.Fetch(ctx, id, func(p Progress) { got.Store(p.DoneBytes) })
		aDone <- err
	}()
	for range 3 {
		gate <- struct{}{}
	}
	if !meshtest.Eventually(20*time.Second, func() bool { return got.Load() >= 2*minChunkSize }) {
		t.Fatalf("A got %d bytes from the seeder", got.Load())
	}
	sb := newStore(t, 0)
	serve(t, sb, nodes[2])
	fb := fetcher(t, sb, nodes[2], &scriptedFinder{script: [][]*mesh.Node{{nodes[1]}}}, FetchConfig{Refresh: time.Minute})
	var bGot atomic.Int64
	bDone := make(chan error, 1)
	var bStats FetchStats
	go func() {
		var err error
		bStats, err = fb.Fetch(ctx, id, func(p Progress) { bGot.Store(p.DoneBytes) })
		bDone <- err
	}()
	if !meshtest.Eventually(20*time.Second, func() bool { return bGot.Load() >= 2*minChunkSize }) {
		cancel()
		err := <-bDone
		t.Fatalf("B got %d bytes: %v %+v; A has %d", bGot.Load(), err, bStats, got.Load())
	}
	close(gate)
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	checkModel(t, sa, id, data)
	checkModel(t, sb, id, data)
	if aStats.Peers != 2 {
		t.Fatalf("A: %+v; want sessions with the seeder and with B", aStats)
	}
}
