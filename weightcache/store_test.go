package weightcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a settable clock for last-use times.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second) // every reading is a distinct, later instant
	return c.t
}

func newStore(t testing.TB, max int64) *Store {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: max, ChunkSize: minChunkSize, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hfModel writes a model in the Hugging Face layout and returns its files.
func hfModel(t testing.TB, dir string, seed uint64, big int) map[string][]byte {
	files := map[string][]byte{
		"config.json":                      []byte(`{"architectures":["LlamaForCausalLM"]}`),
		"tokenizer.json":                   randBytes(seed+1, 3000),
		"tokenizer_config.json":            []byte(`{}`),
		"model-00001-of-00002.safetensors": randBytes(seed+2, big),
		"model-00002-of-00002.safetensors": randBytes(seed+3, big/3+17),
		"original/params.json":             []byte(`{"dim":4096}`),
		"empty.txt":                        {},
	}
	for p, b := range files {
		writeFile(t, filepath.Join(dir, p), b)
	}
	return files
}

func TestAddKeepsLayoutAndMaterialises(t *testing.T) {
	s := newStore(t, 0)
	src := t.TempDir()
	files := hfModel(t, src, 1, 3*minChunkSize+5)
	writeFile(t, filepath.Join(src, ".git", "objects", "x"), []byte("git"))
	// A Hugging Face cache snapshot: the file is a symlink into blobs.
	writeFile(t, filepath.Join(t.TempDir(), "blob"), nil)
	blob := filepath.Join(t.TempDir(), "blobfile")
	writeFile(t, blob, []byte("generation config"))
	if err := os.Symlink(blob, filepath.Join(src, "generation_config.json")); err != nil {
		t.Fatal(err)
	}
	files["generation_config.json"] = []byte("generation config")

	ctx := context.Background()
	id, err := s.Add(ctx, src, "llama-test")
	if err != nil {
		t.Fatal(err)
	}
	if id2, err := s.Add(ctx, src, ""); err != nil || id2 != id {
		t.Fatalf("second Add = %s, %v; want the same ID %s", id2, err, id)
	}
	if got, err := s.Resolve("llama-test"); err != nil || got != id {
		t.Fatalf("Resolve(name) = %s, %v; want %s", got, err, id)
	}
	dir, err := s.Path("llama-test")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s.Manifest(id)
	if len(m.Files) != len(files) {
		t.Fatalf("manifest has %d files; want %d (.git skipped)", len(m.Files), len(files))
	}
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes, %v; want %d bytes", p, len(got), err, len(want))
		}
		fi, _ := os.Stat(filepath.Join(dir, p))
		if fi.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s: mode %v; want read-only", p, fi.Mode())
		}
		sum := sha256.Sum256(want)
		bi, _ := os.Stat(s.blobPath(hex.EncodeToString(sum[:])))
		if !os.SameFile(fi, bi) {
			t.Errorf("%s is not a hard link to its blob", p)
		}
	}
	if di, _ := os.Stat(filepath.Join(dir, "original")); di.Mode().Perm()&0o222 != 0 {
		t.Errorf("directory mode %v; want read-only", di.Mode())
	}
	mb, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyManifest(id, mb); err != nil {
		t.Fatalf(".shoal/manifest.json: %v", err)
	}
	// The runtime contract: path, size, sha256 per file.
	for _, f := range m.Files {
		sum := sha256.Sum256(files[f.Path])
		if f.SHA256 != hex.EncodeToString(sum[:]) || f.Size != int64(len(files[f.Path])) {
			t.Errorf("%s: manifest says %d bytes %s", f.Path, f.Size, f.SHA256)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		t.Error(".git was imported")
	}
	if err := s.Verify(context.Background(), id, nil); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	// Reopen: state persists.
	s2, err := Open(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s2.Stat("llama-test"); err != nil || info.State != StateComplete || info.ID != id {
		t.Fatalf("after reopen Stat = %+v, %v", info, err)
	}
	if got := s2.Complete(); len(got) != 1 || got[0] != id {
		t.Fatalf("Complete() = %v; want [%s]", got, id)
	}
}

func TestAddSingleFile(t *testing.T) {
	s := newStore(t, 0)
	p := filepath.Join(t.TempDir(), "model.gguf")
	writeFile(t, p, randBytes(7, 2*minChunkSize))
	id, err := s.Add(context.Background(), p, "")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s.Manifest(id)
	if len(m.Files) != 1 || m.Files[0].Path != "model.gguf" || len(m.Files[0].Chunks) != 2 {
		t.Fatalf("manifest %+v", m.Files)
	}
}

func TestAddRefusesUnsafe(t *testing.T) {
	s := newStore(t, 0)
	cases := map[string]func(dir string){
		"symlinked dir": func(dir string) {
			other := t.TempDir()
			writeFile(t, filepath.Join(other, "x"), []byte("x"))
			_ = os.Symlink(other, filepath.Join(dir, "linked"))
		},
		"dangling link": func(dir string) { _ = os.Symlink("/nonexistent/x", filepath.Join(dir, "dangling")) },
		"fifo":          func(dir string) { _ = syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644) },
		"reserved":      func(dir string) { writeFile(t, filepath.Join(dir, ".shoal"), []byte("{}")) },
	}
	for name, mk := range cases {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "config.json"), []byte("{}"))
		mk(dir)
		if _, err := s.Add(context.Background(), dir, ""); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("%s: Add = %v; want ErrUnsafePath", name, err)
		}
	}
}

// TestAddSkipsManifestDir: importing a copy of a materialised model (it
// carries .shoal/manifest.json) gives the same model back.
func TestAddSkipsManifestDir(t *testing.T) {
	s := newStore(t, 0)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), []byte(`{"a":1}`))
	want, err := s.Add(context.Background(), dir, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ".shoal", "manifest.json"), []byte("{}"))
	got, err := s.Add(context.Background(), dir, "")
	if err != nil || got != want {
		t.Errorf("Add of the dir with .shoal/ = %q, %v; want %q", got, err, want)
	}
}

func addRandom(t *testing.T, s *Store, seed uint64, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "w.bin")
	writeFile(t, p, randBytes(seed, size))
	id, err := s.Add(context.Background(), p, "")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEvictionLRUNeverTouchesPinned(t *testing.T) {
	const sz = 100_000
	s := newStore(t, 3*sz+sz/2)
	a := addRandom(t, s, 1, sz)
	b := addRandom(t, s, 2, sz)
	c := addRandom(t, s, 3, sz)
	if err := s.Pin(a); err != nil { // a is oldest but pinned
		t.Fatal(err)
	}
	if _, err := s.Path(b); err != nil { // b used after c: c is now least recent
		t.Fatal(err)
	}
	d := addRandom(t, s, 4, sz)
	has := func(id string) bool { _, err := s.Stat(id); return err == nil }
	if !has(a) || !has(b) || has(c) || !has(d) {
		t.Fatalf("after adding d: a=%v b=%v c=%v d=%v; want c evicted only", has(a), has(b), has(c), has(d))
	}
	if err := s.Remove(a); !errors.Is(err, ErrPinned) {
		t.Fatalf("Remove(pinned) = %v; want ErrPinned", err)
	}
	if err := s.Pin(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(d); err != nil {
		t.Fatal(err)
	}
	// Everything pinned: a new model cannot fit and nothing pinned goes.
	e := addRandom2(t, s, 5, sz)
	if !errors.Is(e, ErrCacheFull) {
		t.Fatalf("Add over a full, pinned cache = %v; want ErrCacheFull", e)
	}
	for _, id := range []string{a, b, d} {
		if !has(id) {
			t.Fatalf("pinned %s evicted", id)
		}
		if _, err := s.Path(id); err != nil {
			t.Fatalf("pinned %s: %v", id, err)
		}
	}
	if err := s.Unpin(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	if has(a) || s.Usage() > s.cfg.MaxBytes {
		t.Fatalf("after Remove: has=%v usage=%d", has(a), s.Usage())
	}
}

func addRandom2(t *testing.T, s *Store, seed uint64, size int) error {
	p := filepath.Join(t.TempDir(), "w.bin")
	writeFile(t, p, randBytes(seed, size))
	_, err := s.Add(context.Background(), p, "")
	return err
}

func TestSharedBlobSurvivesRemove(t *testing.T) {
	s := newStore(t, 0)
	d1, d2 := t.TempDir(), t.TempDir()
	shared := randBytes(9, 5000)
	writeFile(t, filepath.Join(d1, "tokenizer.json"), shared)
	writeFile(t, filepath.Join(d2, "tokenizer.json"), shared)
	writeFile(t, filepath.Join(d1, "w"), []byte("one"))
	writeFile(t, filepath.Join(d2, "w"), []byte("two"))
	a, _ := s.Add(context.Background(), d1, "")
	b, _ := s.Add(context.Background(), d2, "")
	if _, err := s.Path(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	dir, err := s.Path(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "tokenizer.json")); !bytes.Equal(got, shared) {
		t.Fatal("shared file lost when the other model was removed")
	}
	if err := s.Verify(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCatchesCorruptionOnDisk(t *testing.T) {
	s := newStore(t, 0)
	id := addRandom(t, s, 11, 3*minChunkSize)
	m, _ := s.Manifest(id)
	bp := s.blobPath(m.Files[0].SHA256)
	_ = os.Chmod(bp, 0o644)
	f, err := os.OpenFile(bp, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteAt([]byte{0xff, 0xfe}, 100)
	f.Close()
	if err := s.Verify(context.Background(), id, nil); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("Verify = %v; want ErrHashMismatch", err)
	}
	if info, _ := s.Stat(id); info.State != StatePartial {
		t.Fatalf("state %s after failed verify; want partial", info.State)
	}
	if _, err := s.Path(id); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Path = %v; want ErrIncomplete", err)
	}
}

func TestTamperedManifestRefused(t *testing.T) {
	s := newStore(t, 0)
	id := addRandom(t, s, 12, 1000)
	mp := s.manifestPath(id)
	b, _ := os.ReadFile(mp)
	b = bytes.Replace(b, []byte(`"size":1000`), []byte(`"size":999`), 1)
	_ = os.WriteFile(mp, b, 0o644)
	if _, err := s.Manifest(id); !errors.Is(err, ErrManifestMismatch) {
		t.Fatalf("Manifest = %v; want ErrManifestMismatch", err)
	}
}
