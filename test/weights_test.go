package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Model is what `shoal weights ls -o json` says of one model.
type Model struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	State     string `json:"state"`
	Pins      int    `json:"pins"`
	Peers     int    `json:"peers"`
}

// PullResult is what `shoal weights pull -o json` prints.
type PullResult struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	SizeBytes    int64    `json:"size_bytes"`
	State        string   `json:"state"`
	FetchedBytes int64    `json:"fetched_bytes"`
	ResumedBytes int64    `json:"resumed_bytes"`
	WastedBytes  int64    `json:"wasted_bytes"`
	Peers        int      `json:"peers"`
	Banned       []string `json:"banned"`
	ElapsedSec   float64  `json:"elapsed_s"`
	// Transports counts chunk sessions per transport ("tcp", "quic-v1").
	Transports map[string]int `json:"transports"`
}

// GenModel writes a model in the Hugging Face layout under a new temp dir:
// config.json, tokenizer files and the weight files of the given sizes,
// filled from a seeded generator (the same seed gives the same bytes).
func GenModel(tb testing.TB, seed uint64, sizes ...int64) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "shoal-model-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 7})
	write := func(name string, n int64) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := io.CopyN(f, rng, n); err != nil {
			tb.Fatal(err)
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"model_type":"test","seed":%d}`+"\n", seed)), 0o644); err != nil {
		tb.Fatal(err)
	}
	write("tokenizer/tokenizer.json", 3000)
	for i, n := range sizes {
		write(fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(sizes)), n)
	}
	return dir
}

// TreeHashes maps every regular file under dir (but .shoal/) to its SHA-256.
func TreeHashes(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && rel == ".shoal" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Shoal runs `shoal --home HOME ARGS` and fails the test on error.
func (n *Node) Shoal(args ...string) string {
	n.tb.Helper()
	out, stderr, err := Run(n.tb, append([]string{"--home", n.Home}, args...)...)
	if err != nil {
		n.tb.Fatalf("shoal %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(out)
}

// Models is `shoal weights ls -o json`.
func (n *Node) Models() []Model {
	n.tb.Helper()
	var ms []Model
	n.JSON(&ms, "weights", "ls")
	return ms
}

// ModelByID finds id in ms.
func ModelByID(ms []Model, id string) (Model, bool) {
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return Model{}, false
}

var idRE = regexp.MustCompile(`^bagaaiera[a-z2-7]+$`)

// A seeder and four fetchers of a generated multi-file model, with a fifth
// member (test/liar) serving the same model with every chunk corrupted on
// the wire. All four fetchers pull by name at once; every copy ends
// byte-identical to the source, the liar is detected (banned, its chunks
// wasted) and nobody honest is banned.
func TestWeightsSwarmWithLiar(t *testing.T) {
	src := GenModel(t, 1, 20<<20, 9<<20+12345)
	want := TreeHashes(t, src)

	seeder := Up(t, NewHome(t))
	id := seeder.Shoal("weights", "add", src, "--name", "swarm-model")
	if !idRE.MatchString(id) {
		t.Fatalf("weights add printed %q; want the model ID alone", id)
	}
	token := seeder.Token()
	liarID, _ := StartLiar(t, token, src, id)

	t0 := time.Now()
	var fetchers []*Node
	for i := 0; i < 4; i++ {
		fetchers = append(fetchers, Join(t, NewHome(t), token))
	}
	// Every fetcher sees the model by name in the pool, held by the seeder
	// and the liar.
	for i, f := range fetchers {
		ok := Eventually(15*time.Second, func() bool {
			m, ok := ModelByID(f.Models(), id)
			return ok && m.State == "remote" && m.Name == "swarm-model" && m.Peers == 2
		})
		if !ok {
			t.Fatalf("fetcher %d lists %+v; want %s remote as swarm-model with 2 peers", i, f.Models(), id)
		}
	}

	t.Logf("pool of 6 formed and listing the model in %v", time.Since(t0))
	t0 = time.Now()
	results := make([]PullResult, len(fetchers))
	errs := make([]error, len(fetchers))
	var wg sync.WaitGroup
	for i, f := range fetchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, stderr, err := Run(t, "--home", f.Home, "weights", "pull", "swarm-model", "-o", "json")
			if err != nil {
				errs[i] = fmt.Errorf("%v\n%s", err, stderr)
				return
			}
			errs[i] = jsonInto(out, &results[i])
		}()
	}
	wg.Wait()
	t.Logf("four concurrent pulls took %v", time.Since(t0))
	t0 = time.Now()
	banners := 0
	for i, f := range fetchers {
		if errs[i] != nil {
			t.Fatalf("fetcher %d: pull: %v", i, errs[i])
		}
		r := results[i]
		if r.ID != id || r.State != "complete" || r.Name != "swarm-model" {
			t.Errorf("fetcher %d pulled %+v; want %s complete as swarm-model", i, r, id)
		}
		for _, b := range r.Banned {
			if b != liarID {
				t.Errorf("fetcher %d banned %s, an honest member", i, b)
			}
		}
		if slices.Contains(r.Banned, liarID) {
			banners++
			if r.WastedBytes == 0 {
				t.Errorf("fetcher %d banned the liar but wasted no bytes", i)
			}
		}
		dir := f.Shoal("weights", "path", "swarm-model")
		if got := TreeHashes(t, dir); !mapsEqual(got, want) {
			t.Errorf("fetcher %d: %s holds %v; want %v", i, dir, got, want)
		}
		t.Logf("fetcher %d: %.2fs, fetched %d B (wasted %d) from %d peers, banned %v", i, r.ElapsedSec, r.FetchedBytes, r.WastedBytes, r.Peers, r.Banned)
	}
	if banners == 0 {
		t.Errorf("no fetcher banned the liar %s; its corrupt chunks went unnoticed or unasked", liarID)
	}
	// Each fetcher now announces the model complete: the seeder counts
	// the four fetchers and the liar.
	if !Eventually(15*time.Second, func() bool {
		m, ok := ModelByID(seeder.Models(), id)
		return ok && m.State == "complete" && m.Peers == 5
	}) {
		t.Errorf("seeder lists %+v; want %s complete with 5 peers", seeder.Models(), id)
	}
	t.Logf("seeder counted every holder after %v", time.Since(t0))
}

// A fetch whose daemon is SIGKILLed half-way resumes after a restart from
// the chunks it had verified, and ends byte-identical.
func TestWeightsResumeAfterKill(t *testing.T) {
	src := GenModel(t, 2, 96<<20, 96<<20)
	want := TreeHashes(t, src)
	seeder := Up(t, NewHome(t))
	id := seeder.Shoal("weights", "add", src)
	fetcher := Join(t, NewHome(t), seeder.Token())

	// Pull, watching the plain progress lines on stderr; kill the daemon
	// at the first one that is not 100%.
	cmd := exec.Command(Binary(t), "--home", fetcher.Home, "weights", "pull", id)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	var seen []string
	var killLine string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		seen = append(seen, line)
		var pct int
		if _, err := fmt.Sscanf(strings.TrimPrefix(line, "pull "+id+": "), "%d%%", &pct); err == nil && !killed && pct >= 10 && pct < 90 {
			fetcher.Kill()
			killed, killLine = true, line
		}
	}
	pullErr := cmd.Wait()
	if !killed || pullErr == nil {
		t.Fatalf("the pull finished before the daemon could be killed half-way (killed %v, err %v); progress:\n%s", killed, pullErr, strings.Join(seen, "\n"))
	}

	fetcher = Up(t, fetcher.Home) // resumes its pool and its partial download
	m, ok := ModelByID(fetcher.Models(), id)
	if !ok || m.State != "partial" {
		t.Fatalf("after the kill the fetcher lists %+v; want %s partial", fetcher.Models(), id)
	}
	var r PullResult
	ok = Eventually(20*time.Second, func() bool {
		out, _, err := Run(t, "--home", fetcher.Home, "weights", "pull", id, "-o", "json")
		return err == nil && jsonInto(out, &r) == nil
	})
	if !ok {
		t.Fatal("resumed pull never succeeded")
	}
	if r.ResumedBytes < r.SizeBytes/20 || r.ResumedBytes >= r.SizeBytes || r.FetchedBytes >= r.SizeBytes {
		t.Errorf("resumed pull: %+v; want some bytes resumed and fewer than the whole model fetched", r)
	}
	t.Logf("killed after %q; resumed %d of %d bytes, fetched %d", killLine, r.ResumedBytes, r.SizeBytes, r.FetchedBytes)
	if got := TreeHashes(t, fetcher.Shoal("weights", "path", id)); !mapsEqual(got, want) {
		t.Errorf("resumed model differs from the source: %v; want %v", got, want)
	}
}

// Under --cache-size, adding a model evicts the least recently used
// unpinned one and never a pinned one, even an older one; a pinned model
// cannot be removed until unpinned.
func TestWeightsEvictionSparesPinned(t *testing.T) {
	n := Up(t, NewHome(t), "--cache-size", "40MiB")
	a := n.Shoal("weights", "add", GenModel(t, 10, 16<<20), "--name", "a")
	n.Shoal("weights", "pin", "a")
	b := n.Shoal("weights", "add", GenModel(t, 11, 16<<20), "--name", "b")
	c := n.Shoal("weights", "add", GenModel(t, 12, 16<<20), "--name", "c")
	ms := n.Models()
	if m, ok := ModelByID(ms, a); !ok || m.State != "complete" || m.Pins != 1 {
		t.Errorf("pinned model a: %+v (listed %v); want complete with 1 pin", m, ok)
	}
	if m, ok := ModelByID(ms, b); ok {
		t.Errorf("model b is still listed (%+v); want it evicted to make room for c", m)
	}
	if m, ok := ModelByID(ms, c); !ok || m.State != "complete" {
		t.Errorf("model c: %+v (listed %v); want complete", m, ok)
	}
	_, stderr, err := Run(t, "--home", n.Home, "weights", "rm", "a")
	var ee *exec.ExitError
	if !asExit(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr, "pinned") {
		t.Errorf("weights rm of a pinned model: err %v, stderr %q; want exit 1 saying it is pinned", err, stderr)
	}
	n.Shoal("weights", "unpin", "a")
	n.Shoal("weights", "rm", "a")
	if _, ok := ModelByID(n.Models(), a); ok {
		t.Errorf("model a still listed after rm")
	}
	if _, _, err := Run(t, "--home", n.Home, "weights", "pull"); !asExit(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("weights pull without an argument: %v; want exit 2", err)
	}
}

// `shoal weights verify` passes a model as imported, and after one byte of
// one of its files rots on disk it fails, naming the file, and leaves the
// model partial (no longer complete, no directory to mount).
func TestWeightsVerifyFindsRot(t *testing.T) {
	n := Up(t, NewHome(t))
	src := GenModel(t, 13, 3<<20, 1<<20)
	id := n.Shoal("weights", "add", src, "--name", "v")
	if got := n.Shoal("weights", "verify", "v"); got != id {
		t.Fatalf("weights verify printed %q; want the ID %s alone", got, id)
	}
	var res PullResult
	n.JSON(&res, "weights", "verify", id)
	if res.ID != id || res.State != "complete" {
		t.Fatalf("weights verify -o json: %+v; want %s complete", res, id)
	}
	var name, sum string
	for f, h := range TreeHashes(t, src) {
		if strings.HasSuffix(f, ".safetensors") {
			name, sum = f, h
			break
		}
	}
	blob := filepath.Join(n.Home, "weights", "blobs", sum)
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0x5a, 0xa5}, 1000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, stderr, err := Run(t, "--home", n.Home, "weights", "verify", "v")
	var ee *exec.ExitError
	if !asExit(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr, name) || !strings.Contains(stderr, "partial now") {
		t.Fatalf("weights verify of a rotted model: err %v, stderr %q; want exit 1 naming %s and saying the model is partial now", err, stderr, name)
	}
	if m, ok := ModelByID(n.Models(), id); !ok || m.State != "partial" {
		t.Fatalf("rotted model in ls: %+v (listed %v); want partial", m, ok)
	}
	if _, _, err := Run(t, "--home", n.Home, "weights", "path", "v"); err == nil {
		t.Fatalf("weights path of a rotted model succeeded")
	}
}

// StartLiar starts test/liar in the pool of token serving src corrupted,
// and returns its peer ID and the model ID it serves (which must be id).
func StartLiar(tb testing.TB, token, src, id string) (peerID, modelID string) {
	tb.Helper()
	bin := testTool(tb, "liar")
	dir, err := os.MkdirTemp("", "shoal-liar-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	cmd := exec.Command(bin, "-token", token, "-dir", dir, "-model", src)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatalf("liar: %v\n%s", err, errb.String())
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[1] != id {
		tb.Fatalf("liar says %q; want its peer ID and model %s", line, id)
	}
	return f[0], f[1]
}

// toolBuild is one program under test/ built once per test process.
type toolBuild struct {
	once sync.Once
	path string
	err  error
}

var (
	toolsMu sync.Mutex
	tools   = map[string]*toolBuild{}
)

// testTool builds the program in test/<name> (test/workload: slow service,
// failing program, gang member; test/liar: a peer that lies about weights)
// once per test process and returns its path.
func testTool(tb testing.TB, name string) string {
	tb.Helper()
	toolsMu.Lock()
	tool, ok := tools[name]
	if !ok {
		tool = &toolBuild{}
		tools[name] = tool
	}
	toolsMu.Unlock()
	tool.once.Do(func() {
		bin := Binary(tb)
		tool.path = filepath.Join(filepath.Dir(bin), name)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tool.path, "./test/"+name)
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			tool.err = fmt.Errorf("go build %s: %v\n%s", name, err, out)
		}
	})
	if tool.err != nil {
		tb.Fatal(tool.err)
	}
	return tool.path
}

func repoRoot() string {
	wd, _ := os.Getwd() // go test runs in the package directory, test/
	return filepath.Dir(wd)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
