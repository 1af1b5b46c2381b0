package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Format is the value config.json's "format" must hold.
const Format = "shoal-reference/v1"

// ManifestPath is where the manifest sits inside a model directory.
const ManifestPath = ".shoal/manifest.json"

// Errors a model directory can fail with.
var (
	ErrManifest = errors.New("reference: bad manifest")
	ErrMismatch = errors.New("reference: file does not match manifest")
	ErrConfig   = errors.New("reference: bad model config")
)

// Model is what the server loaded and verified.
type Model struct {
	Name          string
	Vocab         []string
	WeightsSHA256 [32]byte
	WeightsBytes  int64
	Files         int // files verified
}

// config is config.json of a reference model.
type config struct {
	Format  string `json:"format"`
	Name    string `json:"name"`
	Vocab   string `json:"vocab"`
	Weights string `json:"weights"`
}

// manifestFile is the part of a manifest entry this program reads.
type manifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type manifest struct {
	Files []manifestFile `json:"files"`
}

// LoadModel reads the manifest of dir, verifies every listed file and loads
// the reference model. Nothing it reads is trusted before it is verified.
func LoadModel(dir string) (*Model, error) {
	raw, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(ManifestPath)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	var man manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, ManifestPath, err)
	}
	if len(man.Files) == 0 {
		return nil, fmt.Errorf("%w: %s lists no files", ErrManifest, ManifestPath)
	}
	sums := make(map[string][32]byte, len(man.Files))
	sizes := make(map[string]int64, len(man.Files))
	for _, f := range man.Files {
		if !validPath(f.Path) {
			return nil, fmt.Errorf("%w: path %q is not a relative slash-separated path inside the model", ErrManifest, f.Path)
		}
		want, err := hex.DecodeString(f.SHA256)
		if err != nil || len(want) != sha256.Size || f.SHA256 != strings.ToLower(f.SHA256) {
			return nil, fmt.Errorf("%w: %s: sha256 %q is not 64 lowercase hex digits", ErrManifest, f.Path, f.SHA256)
		}
		got, size, err := hashFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrMismatch, f.Path, err)
		}
		if size != f.Size {
			return nil, fmt.Errorf("%w: %s: size %d bytes, manifest says %d", ErrMismatch, f.Path, size, f.Size)
		}
		if !bytes.Equal(got[:], want) {
			return nil, fmt.Errorf("%w: %s: sha256 %x, manifest says %s", ErrMismatch, f.Path, got, f.SHA256)
		}
		sums[f.Path], sizes[f.Path] = got, size
	}

	// Read only what was verified; a file changed since is caught again by
	// hashing what is read.
	cfgRaw, err := readVerified(dir, "config.json", sums)
	if err != nil {
		return nil, err
	}
	var cfg config
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return nil, fmt.Errorf("%w: config.json: %w", ErrConfig, err)
	}
	if cfg.Format != Format {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrConfig, cfg.Format, Format)
	}
	if cfg.Name == "" || !validPath(cfg.Vocab) || !validPath(cfg.Weights) {
		return nil, fmt.Errorf("%w: name, vocab and weights must be set (vocab and weights as paths inside the model)", ErrConfig)
	}
	vocabRaw, err := readVerified(dir, cfg.Vocab, sums)
	if err != nil {
		return nil, err
	}
	var vocab []string
	sc := bufio.NewScanner(bytes.NewReader(vocabRaw))
	for sc.Scan() {
		if w := strings.TrimSpace(sc.Text()); w != "" {
			vocab = append(vocab, w)
		}
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("%w: %s holds no words", ErrConfig, cfg.Vocab)
	}
	wsum, ok := sums[cfg.Weights]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not listed in the manifest", ErrManifest, cfg.Weights)
	}
	return &Model{
		Name:          cfg.Name,
		Vocab:         vocab,
		WeightsSHA256: wsum,
		WeightsBytes:  sizes[cfg.Weights],
		Files:         len(man.Files),
	}, nil
}

func readVerified(dir, name string, sums map[string][32]byte) ([]byte, error) {
	want, ok := sums[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not listed in the manifest", ErrManifest, name)
	}
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMismatch, name, err)
	}
	if sha256.Sum256(b) != want {
		return nil, fmt.Errorf("%w: %s changed after it was verified", ErrMismatch, name)
	}
	return b, nil
}

func validPath(p string) bool {
	return p != "" && !strings.HasPrefix(p, "/") && !strings.Contains(p, `\`) &&
		path.Clean(p) == p && p != "." && p != ".." && !strings.HasPrefix(p, "../")
}

func hashFile(name string) (sum [32]byte, size int64, err error) {
	f, err := os.Open(name)
	if err != nil {
		return sum, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return sum, 0, err
	}
	if !st.Mode().IsRegular() {
		return sum, 0, errors.New("not a regular file")
	}
	h := sha256.New()
	size, err = io.Copy(h, f)
	if err != nil {
		return sum, 0, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, size, nil
}

// Complete returns n words answering prompt, the same every time for the
// same model and prompt.
func (m *Model) Complete(prompt string, n int) []string {
	words := make([]string, n)
	var idx [4]byte
	for i := range n {
		h := sha256.New()
		h.Write(m.WeightsSHA256[:])
		h.Write([]byte(prompt))
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		h.Write(idx[:])
		sum := h.Sum(nil)
		words[i] = m.Vocab[binary.BigEndian.Uint64(sum[:8])%uint64(len(m.Vocab))]
	}
	return words
}

// GenerateOptions says what reference model Generate writes.
type GenerateOptions struct {
	Name         string // the model's name
	WeightsBytes int64  // size of weights.bin in bytes
	Seed         uint64 // same seed, same vocabulary and weights
}

// syllables build the generated vocabulary.
var syllables = []string{"ka", "lo", "mi", "nu", "shi", "ta", "ve", "ro", "su", "pa", "de", "qi", "zo", "fen", "gal", "hu"}

// vocabSize is how many words a generated vocabulary holds.
const vocabSize = 256

// Generate writes a reference model and its manifest to dir (created when
// missing). The same options always write the same bytes.
func Generate(dir string, o GenerateOptions) error {
	if o.Name == "" || o.WeightsBytes < 0 {
		return fmt.Errorf("%w: generate needs a name and a size of 0 bytes or more", ErrConfig)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	seen := map[string]bool{}
	var vocab bytes.Buffer
	for len(seen) < vocabSize {
		var w strings.Builder
		for range 1 + rng.IntN(3) {
			w.WriteString(syllables[rng.IntN(len(syllables))])
		}
		if !seen[w.String()] {
			seen[w.String()] = true
			fmt.Fprintln(&vocab, w.String())
		}
	}
	weights := make([]byte, o.WeightsBytes)
	for i := 0; i < len(weights); i += 8 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], rng.Uint64())
		copy(weights[i:], b[:])
	}
	cfg, err := json.MarshalIndent(config{Format: Format, Name: o.Name, Vocab: "vocab.txt", Weights: "weights.bin"}, "", "  ")
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{{"config.json", append(cfg, '\n')}, {"vocab.txt", vocab.Bytes()}, {"weights.bin", weights}}
	if err := os.MkdirAll(filepath.Join(dir, ".shoal"), 0o755); err != nil {
		return err
	}
	var man struct {
		Name  string         `json:"name"`
		Files []manifestFile `json:"files"`
	}
	man.Name = o.Name
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return err
		}
		sum := sha256.Sum256(f.data)
		man.Files = append(man.Files, manifestFile{Path: f.name, Size: int64(len(f.data)), SHA256: hex.EncodeToString(sum[:])})
	}
	raw, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, filepath.FromSlash(ManifestPath)), append(raw, '\n'), 0o644)
}
