package weightcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"lukechampine.com/blake3"
)

// Chunk geometry and hash, chosen by measurement on the pool's reference
// machine (2-core AMD EPYC VM with SHA-NI and AVX-512, Go 1.26, one core:
// GOMAXPROCS=1, BenchmarkVerify):
//
//	             64 KiB      1 MiB      4 MiB
//	sha256      1.53 GB/s  1.45 GB/s  1.45 GB/s
//	blake3      1.69 GB/s  2.65 GB/s  2.90 GB/s
//
// SHA-256 is SHA-NI accelerated here and still runs at half BLAKE3's speed,
// so chunks are hashed with BLAKE3: verification is the receiver's CPU cost
// on top of decryption, and a volunteer may have 2 cores. Whole files keep
// SHA-256 because that is what a Hugging Face LFS oid is and what a
// workload can check with stock tools; a fetch checks it once per file
// before the file becomes a shared blob.
//
// 4 MiB chunks: BLAKE3 reaches full speed there (smaller inputs lose to
// per-call overhead; 16 MiB falls out of cache), and end to end
// (BenchmarkFetch over TCP, 256 MiB, default pipeline) 4 MiB cost the
// least CPU: 256 KiB 4.2, 1 MiB 3.8, 4 MiB 3.8, 16 MiB 4.5 CPU-s/GiB
// (both ends), with the best wall time. A 140 GB model has ~35,000 chunks
// (a 4.3 KiB have-map, a ~2.5 MB manifest), and a stalled or lying peer
// costs at most a few chunks of rework.
const (
	// DefaultChunkSize is the chunk size Add uses.
	DefaultChunkSize = 4 << 20
	// ChunkHash names the chunk hash in manifests.
	ChunkHash = "blake3"

	minChunkSize = 64 << 10
	maxChunkSize = 16 << 20
	// MaxManifestBytes bounds a manifest on the wire and on disk.
	MaxManifestBytes = 64 << 20
	maxFiles         = 1 << 20
	maxPathLen       = 4096
	manifestVersion  = 1
	// codecJSON is the multicodec for plain JSON: manifests are JSON bytes.
	codecJSON = 0x0200
)

// Manifest describes a model: its files, each with its whole-file SHA-256
// and its chunk hashes. Its canonical JSON encoding (Encode) is what the
// model's ID addresses; Decode accepts only that encoding.
type Manifest struct {
	// Version is the manifest format, 1.
	Version int `json:"version"`
	// ChunkSize is the size of every chunk but a file's last, in bytes.
	ChunkSize int64 `json:"chunk_size"`
	// ChunkHash names the chunk hash: "blake3" (32-byte BLAKE3).
	ChunkHash string `json:"chunk_hash"`
	// Files are sorted by Path, which is unique.
	Files []File `json:"files"`
}

// File is one file of a model.
type File struct {
	// Path is relative, slash-separated and clean: no "..", no leading "/",
	// nothing under ".shoal/".
	Path string `json:"path"`
	// Size in bytes.
	Size int64 `json:"size"`
	// SHA256 of the whole file, lowercase hex (a Hugging Face LFS oid).
	SHA256 string `json:"sha256"`
	// Chunks are the lowercase hex chunk hashes, ceil(Size/ChunkSize) of them.
	Chunks []string `json:"chunks"`
}

// Size is the sum of the file sizes in bytes.
func (m *Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Encode returns the canonical encoding: compact JSON, fields in the order
// above, files sorted by path.
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// DecodeManifest parses b, which must be a valid manifest in canonical
// encoding (anything else would give one model two IDs).
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadManifest, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrBadManifest)
	}
	again, err := m.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: not in canonical encoding", ErrBadManifest)
	}
	return &m, nil
}

// IDOf is the model ID of encoded manifest bytes: a CIDv1 (codec json,
// multihash sha2-256) in its default base32 string form.
func IDOf(manifest []byte) string {
	sum := sha256.Sum256(manifest)
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		panic(err) // sha2-256 with a 32-byte digest always encodes
	}
	return cid.NewCidV1(codecJSON, mh).String()
}

// CheckID reports whether id is a well-formed model ID (it does not say
// whether any model has it).
func CheckID(id string) error {
	c, err := cid.Decode(id)
	if err != nil || c.Version() != 1 || c.Type() != codecJSON || c.String() != id {
		return fmt.Errorf("%w: %q", ErrBadID, id)
	}
	d, err := multihash.Decode(c.Hash())
	if err != nil || d.Code != multihash.SHA2_256 || d.Length != sha256.Size {
		return fmt.Errorf("%w: %q", ErrBadID, id)
	}
	return nil
}

// VerifyManifest decodes b and checks that it is the manifest of id.
func VerifyManifest(id string, b []byte) (*Manifest, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if got := IDOf(b); got != id {
		return nil, fmt.Errorf("%w: manifest hashes to %s, want %s", ErrManifestMismatch, got, id)
	}
	return DecodeManifest(b)
}

func (m *Manifest) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadManifest}, a...)...)
	}
	if m.Version != manifestVersion {
		return bad("version %d", m.Version)
	}
	if m.ChunkHash != ChunkHash {
		return bad("chunk hash %q", m.ChunkHash)
	}
	if m.ChunkSize < minChunkSize || m.ChunkSize > maxChunkSize {
		return bad("chunk size %d", m.ChunkSize)
	}
	if len(m.Files) > maxFiles {
		return bad("%d files", len(m.Files))
	}
	var chunks int64
	for i, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			return err
		}
		if i > 0 && m.Files[i-1].Path >= f.Path {
			return bad("files not sorted or repeated at %q", f.Path)
		}
		// A file may not also be a directory of another: "a" and "a/b".
		if i > 0 && strings.HasPrefix(f.Path, m.Files[i-1].Path+"/") {
			return bad("%q is both a file and a directory", m.Files[i-1].Path)
		}
		if f.Size < 0 || f.Size > 1<<50 {
			return bad("%q: size %d", f.Path, f.Size)
		}
		if !isHex32(f.SHA256) {
			return bad("%q: sha256 %q", f.Path, f.SHA256)
		}
		want := (f.Size + m.ChunkSize - 1) / m.ChunkSize
		if int64(len(f.Chunks)) != want {
			return bad("%q: %d chunks, want %d", f.Path, len(f.Chunks), want)
		}
		for _, c := range f.Chunks {
			if !isHex32(c) {
				return bad("%q: chunk hash %q", f.Path, c)
			}
		}
		chunks += want
		if chunks > 1<<31-1 {
			return bad("too many chunks")
		}
	}
	// "a/b" sorts after "a.x" but before "a0"; the prefix check above only
	// sees neighbours, so check file-versus-directory clashes fully.
	files := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		files[f.Path] = true
	}
	for _, f := range m.Files {
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if files[d] {
				return bad("%q is both a file and a directory", d)
			}
		}
	}
	return nil
}

// checkPath accepts a relative, clean, slash-separated path that stays
// inside the model directory and does not touch the reserved .shoal/.
func checkPath(p string) error {
	switch {
	case p == "", len(p) > maxPathLen, !utf8.ValidString(p),
		strings.ContainsAny(p, "\\\x00"),
		path.IsAbs(p), path.Clean(p) != p,
		p == "..", strings.HasPrefix(p, "../"),
		p == metaDir, strings.HasPrefix(p, metaDir+"/"):
		return fmt.Errorf("%w: %q", ErrUnsafePath, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "." || el == ".." {
			return fmt.Errorf("%w: %q", ErrUnsafePath, p)
		}
	}
	return nil
}

func isHex32(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// chunk is one chunk of a model, numbered across all files in manifest
// order (the index used on the wire and in have-maps).
type chunk struct {
	file int   // index into Manifest.Files
	off  int64 // offset in the file
	n    int   // length in bytes
	sum  [32]byte
}

// layout is a manifest resolved for transfer: every chunk with its place.
type layout struct {
	m      *Manifest
	chunks []chunk
	first  []int // first[i]: index of file i's first chunk
}

func newLayout(m *Manifest) *layout {
	l := &layout{m: m, first: make([]int, len(m.Files)+1)}
	for i, f := range m.Files {
		l.first[i] = len(l.chunks)
		for j, h := range f.Chunks {
			c := chunk{file: i, off: int64(j) * m.ChunkSize}
			c.n = int(min(m.ChunkSize, f.Size-c.off))
			_, _ = hex.Decode(c.sum[:], []byte(h)) // validated hex
			l.chunks = append(l.chunks, c)
		}
	}
	l.first[len(m.Files)] = len(l.chunks)
	return l
}

// verifyChunk reports whether data is chunk i.
func (l *layout) verifyChunk(i int, data []byte) bool {
	c := l.chunks[i]
	return len(data) == c.n && blake3.Sum256(data) == c.sum
}

func chunkSum(data []byte) string {
	s := blake3.Sum256(data)
	return hex.EncodeToString(s[:])
}
