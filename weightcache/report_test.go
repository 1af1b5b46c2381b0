package weightcache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// A blob that rots on the seeder's disk goes out as it is (held chunks
// are not hashed again to be served); the fetcher's check catches the bad
// chunk, bans the seeder and reports the chunk, and the seeder, checking
// its own copy, drops the blob: both models that share the file turn
// partial, to be fetched again, and the seeder stops serving them whole.
func TestRottedBlobFoundByReport(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		name := "stream"
		if bulk {
			name = "bulk"
		}
		t.Run(name, func(t *testing.T) {
			nodes := meshtest.Pool(t, 2, meshtest.Fast)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			src := newStore(t, 0)
			data := randBytes(11, 6*minChunkSize+5)
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "model.safetensors"), data)
			var ids []string
			for _, cfg := range []string{`{"a":1}`, `{"a":2}`} {
				writeFile(t, filepath.Join(dir, "config.json"), []byte(cfg))
				id, err := src.Add(ctx, dir, "")
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			var srv *Server
			if bulk {
				srv = serveBulk(t, src, nodes[0], nil)
			} else {
				srv = Serve(src, nodes[0])
				t.Cleanup(func() { _ = srv.Close() })
			}
			sum := sha256.Sum256(data)
			blob := src.blobPath(hex.EncodeToString(sum[:]))
			rot(t, blob, 3*minChunkSize+17)

			dst := newStore(t, 0)
			f := fetcher(t, dst, nodes[1], &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}, FetchConfig{Refresh: 100 * time.Millisecond})
			st, err := f.Fetch(ctx, ids[0], nil)
			if !errors.Is(err, ErrHashMismatch) {
				t.Fatalf("Fetch from a rotted seeder = %v; want ErrHashMismatch", err)
			}
			if !slices.Contains(f.Banned(ids[0]), nodes[0].ID()) {
				t.Fatalf("Banned = %v; want the rotted seeder", f.Banned(ids[0]))
			}
			if got := st.Transports["bulk"] > 0; got != bulk || len(st.Transports) != 1 {
				t.Fatalf("sessions by transport %v; want one, over a %s", st.Transports, name)
			}
			partial := func() bool {
				for _, id := range ids {
					if info, err := src.Stat(id); err != nil || info.State != StatePartial {
						return false
					}
				}
				return true
			}
			for deadline := time.Now().Add(10 * time.Second); !partial(); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					a, _ := src.Stat(ids[0])
					b, _ := src.Stat(ids[1])
					t.Fatalf("seeder's models after the report: %s, %s; want both partial", a.State, b.State)
				}
			}
			if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("rotted blob still in the store: %v", err)
			}
			if _, err := src.Path(ids[1]); err == nil {
				t.Errorf("the model sharing the rotted file still has a directory")
			}
		})
	}
}

// A report of a chunk that verifies on the server ends the session and
// leaves the model as it was.
func TestReportOfGoodChunkKeepsModel(t *testing.T) {
	nodes := meshtest.Pool(t, 2, meshtest.Fast)
	src, id, _ := seed(t, nodes[0], 3*minChunkSize)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := nodes[1].OpenStream(ctx, nodes[0].ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, _ := src.Manifest(id)
	n := len(newLayout(m).chunks)
	hb := append(encodeHello(hello{op: opGet, id: id}), opHaveMap)
	if _, err := s.Write(append(hb, encodeHaveMap(make([]bool, n))...)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(s)
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatal(err)
	}
	fh, err := decodeFrameHeader(h[:], n, m.ChunkSize)
	if err != nil || fh.typ != frHaveMap {
		t.Fatalf("first frame %+v, %v; want the have-map", fh, err)
	}
	if _, err := io.ReadFull(r, make([]byte, fh.b)); err != nil {
		t.Fatal(err)
	}
	bad := encodeClientMsg(opBad, 1)
	if _, err := s.Write(bad[:]); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, r); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the server kept the session open after the report")
	}
	if info, err := src.Stat(id); err != nil || info.State != StateComplete {
		t.Fatalf("model after a false report: %+v, %v; want complete", info, err)
	}
}

// rot flips one byte of file p at off.
func rot(t *testing.T, p string, off int64) {
	t.Helper()
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// A blob dropped as damaged fails a download in progress that shares it
// with the damaged model, instead of letting that download complete
// without the file.
func TestDroppedBlobFailsDownloadSharingIt(t *testing.T) {
	ctx := context.Background()
	shared := randBytes(21, 2*minChunkSize)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "model.safetensors"), shared)
	s := newStore(t, 0)
	a, err := s.Add(ctx, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	// Model b has the same file and one more; only its manifest is here.
	writeFile(t, filepath.Join(dir, "extra.bin"), randBytes(22, minChunkSize))
	other := newStore(t, 0)
	b, err := other.Add(ctx, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	p := startDownload(t, other, s, b)
	sum := sha256.Sum256(shared)
	s.dropBlob(hex.EncodeToString(sum[:]))
	// Unaborted, finish would wait for extra.bin's chunks.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.finish(fctx); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("download sharing a dropped blob: finish = %v; want ErrHashMismatch", err)
	}
	if info, _ := s.Stat(a); info.State != StatePartial {
		t.Fatalf("model with the dropped blob is %s; want partial", info.State)
	}
}

// A good copy of a chunk that arrives while a bad copy of it is being
// stored waits for the bad one's outcome and is stored: taken as a
// duplicate, it would be dropped and the chunk never asked for again.
func TestGoodCopyStoredAfterBadCopyInProgress(t *testing.T) {
	src := newStore(t, 0)
	data := randBytes(31, 3*minChunkSize)
	id := addBytes(t, src, data)
	dst := newStore(t, 0)
	p := startDownload(t, src, dst, id)
	good := data[minChunkSize : 2*minChunkSize]
	bad := slices.Clone(good)
	bad[100] ^= 1
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	dst.SetWriteHook(func(int) error {
		if first { // only the bad copy's write gets here first
			first = false
			close(entered)
			<-release
		}
		return nil
	})
	badErr := make(chan error, 1)
	go func() {
		_, err := p.write(1, bad)
		badErr <- err
	}()
	<-entered
	type result struct {
		wrote bool
		err   error
	}
	goodRes := make(chan result, 1)
	go func() {
		w, err := p.write(1, good)
		goodRes <- result{w, err}
	}()
	select {
	case r := <-goodRes:
		t.Fatalf("good copy returned %+v while the bad copy was still being stored; want it to wait", r)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-badErr; !errors.Is(err, errBadChunk) {
		t.Fatalf("bad copy: %v; want errBadChunk", err)
	}
	if r := <-goodRes; r.err != nil || !r.wrote || !p.has(1) {
		t.Fatalf("good copy after the bad one failed: %+v, held %v; want it written and held", r, p.has(1))
	}
}

// startDownload gives dst the manifest of model id from src and opens the
// model for writing there, as a fetch does; the partial closes with the
// test.
func startDownload(t *testing.T, src, dst *Store, id string) *partial {
	t.Helper()
	mb, err := src.ManifestBytes(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.AddManifest(id, mb); err != nil {
		t.Fatal(err)
	}
	p, err := dst.openPartial(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}
