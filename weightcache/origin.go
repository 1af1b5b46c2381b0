package weightcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
)

// OriginFile is one file of a model to download from its origin.
type OriginFile struct {
	// URL is an http(s) URL of the file.
	URL string
	// Path is the file's path inside the model.
	Path string
	// SHA256 is the expected whole-file hash (lowercase hex), e.g. a
	// Hugging Face LFS oid; "" when not known (the origin is then trusted
	// for this first copy, and every copy after it is checked against the
	// manifest built from it).
	SHA256 string
	// Size is the expected size in bytes; 0: not known.
	Size int64
}

// HFFiles lists files of a repository served in the Hugging Face layout:
// base is the repository URL (https://huggingface.co/<org>/<model>), rev a
// branch, tag or commit; each file is fetched from <base>/resolve/<rev>/<path>.
// Fill in SHA256 (the LFS oid) where known.
func HFFiles(base, rev string, paths ...string) []OriginFile {
	base = strings.TrimSuffix(base, "/")
	out := make([]OriginFile, 0, len(paths))
	for _, p := range paths {
		segs := strings.Split(p, "/")
		for i, s := range segs {
			segs[i] = url.PathEscape(s)
		}
		out = append(out, OriginFile{URL: base + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(segs, "/"), Path: p})
	}
	return out
}

// OriginRequest asks for a model's first copy from an origin server.
type OriginRequest struct {
	Files []OriginFile
	// Name, when not empty, is mapped to the new model's ID.
	Name string
	// Header is sent with every request (e.g. Authorization for a gated repo).
	Header http.Header
	// Client defaults to http.DefaultClient (which follows the CDN redirects
	// Hugging Face answers /resolve/ with).
	Client *http.Client
	// Attempts per file; a broken download resumes with a Range request.
	// Default 3.
	Attempts int
}

// FetchOrigin downloads every file of req into the store and returns the
// new model's ID. A download that breaks resumes from the bytes already
// on disk (a Range request), here or in a later call; a file whose size
// or SHA-256 is not what req says is deleted and fails the fetch.
// progress, when not nil, is called as bytes arrive.
func (s *Store) FetchOrigin(ctx context.Context, req OriginRequest, progress func(Progress)) (string, error) {
	if len(req.Files) == 0 {
		return "", fmt.Errorf("%w: no files", ErrOrigin)
	}
	if req.Name != "" {
		if err := checkName(req.Name); err != nil {
			return "", err
		}
	}
	if req.Client == nil {
		req.Client = http.DefaultClient
	}
	if req.Attempts <= 0 {
		req.Attempts = 3
	}
	seen := map[string]bool{}
	prog := Progress{}
	for _, f := range req.Files {
		if err := checkPath(f.Path); err != nil {
			return "", err
		}
		if seen[f.Path] {
			return "", fmt.Errorf("%w: %q listed twice", ErrOrigin, f.Path)
		}
		if f.SHA256 != "" && !isHex32(f.SHA256) {
			return "", fmt.Errorf("%w: %q: sha256 %q", ErrOrigin, f.Path, f.SHA256)
		}
		seen[f.Path] = true
		prog.TotalBytes += f.Size
	}
	start := s.cfg.Now()
	m := &Manifest{Version: manifestVersion, ChunkSize: s.cfg.ChunkSize, ChunkHash: ChunkHash}
	for _, f := range req.Files {
		var (
			file File
			err  error
		)
		for a := 0; a < req.Attempts; a++ {
			file, err = s.originFile(ctx, req, f, func(n int64) {
				if progress != nil {
					prog.DoneBytes += n
					prog.FetchedBytes += n
					prog.Elapsed = s.cfg.Now().Sub(start)
					progress(prog)
				}
			})
			if err == nil || ctx.Err() != nil || errors.Is(err, ErrHashMismatch) ||
				errors.Is(err, ErrSizeMismatch) || errors.Is(err, ErrDiskFull) || errors.Is(err, errPermanent) {
				break
			}
			s.log.Info("origin download interrupted; resuming", "url", f.URL, "err", err)
		}
		if err != nil {
			return "", err
		}
		m.Files = append(m.Files, file)
	}
	sortFiles(m.Files)
	b, err := m.Encode()
	if err != nil {
		return "", err
	}
	id := IDOf(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.registerLocked(id, b, m, true); err != nil {
		return "", err
	}
	if req.Name != "" {
		if err := checkName(req.Name); err != nil {
			return "", err
		}
		s.st.Names[req.Name] = id
	}
	if err := s.saveLocked(); err != nil {
		return "", err
	}
	return id, s.makeRoomLocked(0, id)
}

// errPermanent marks origin answers that a retry will not change.
var errPermanent = errors.New("permanent")

// fileHasher hashes a file whole (SHA-256) and per chunk (BLAKE3) as its
// bytes stream past.
type fileHasher struct {
	whole  hash.Hash
	buf    []byte
	chunks []string
	n      int64
}

func newFileHasher(chunkSize int64) *fileHasher {
	return &fileHasher{whole: sha256.New(), buf: make([]byte, 0, chunkSize), chunks: []string{}}
}

func (h *fileHasher) Write(p []byte) (int, error) {
	n := len(p)
	h.whole.Write(p)
	h.n += int64(n)
	for len(p) > 0 {
		k := min(cap(h.buf)-len(h.buf), len(p))
		h.buf = append(h.buf, p[:k]...)
		p = p[k:]
		if len(h.buf) == cap(h.buf) {
			h.chunks = append(h.chunks, chunkSum(h.buf))
			h.buf = h.buf[:0]
		}
	}
	return n, nil
}

func (h *fileHasher) file(p string) File {
	if len(h.buf) > 0 {
		h.chunks = append(h.chunks, chunkSum(h.buf))
		h.buf = h.buf[:0]
	}
	return File{Path: p, Size: h.n, SHA256: hex.EncodeToString(h.whole.Sum(nil)), Chunks: h.chunks}
}

// originFile downloads one file into partial/origin-<hash of URL>,
// resuming from what is there, and moves it into blobs/ once checked.
func (s *Store) originFile(ctx context.Context, req OriginRequest, f OriginFile, progress func(int64)) (File, error) {
	key := sha256.Sum256([]byte(f.URL))
	pp := s.partialPath("origin-" + hex.EncodeToString(key[:16]))
	out, err := os.OpenFile(pp, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return File{}, diskErr(err)
	}
	var fl flusher
	defer func() {
		fl.wait()
		out.Close()
	}()
	drop := func(err error) (File, error) {
		_ = os.Remove(pp)
		return File{}, err
	}
	// What is on disk already is unverified: hash it again from the start.
	h := newFileHasher(s.cfg.ChunkSize)
	have, err := io.Copy(h, out)
	if err != nil {
		return File{}, fmt.Errorf("weightcache: %w", err)
	}
	if f.Size > 0 && have > f.Size {
		_ = out.Truncate(0)
		_, _ = out.Seek(0, io.SeekStart)
		h, have = newFileHasher(s.cfg.ChunkSize), 0
	}
	if f.Size == 0 || have < f.Size {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL, nil)
		if err != nil {
			return drop(fmt.Errorf("%w: %w: %w", ErrOrigin, errPermanent, err))
		}
		for k, v := range req.Header {
			hreq.Header[k] = v
		}
		if have > 0 {
			hreq.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
		}
		resp, err := req.Client.Do(hreq)
		if err != nil {
			return File{}, fmt.Errorf("%w: %s: %w", ErrOrigin, f.URL, err)
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusPartialContent && have > 0:
			if !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(have, 10)+"-") {
				return drop(fmt.Errorf("%w: %s: Content-Range %q for offset %d", ErrOrigin, f.URL, resp.Header.Get("Content-Range"), have))
			}
		case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0 && f.Size == 0:
			// The origin has no bytes past what we hold: the file is whole.
			resp.Body.Close()
			goto done
		case resp.StatusCode == http.StatusOK:
			if have > 0 { // no range support: start over
				if err := out.Truncate(0); err != nil {
					return File{}, diskErr(err)
				}
				h, have = newFileHasher(s.cfg.ChunkSize), 0
			}
		default:
			err := fmt.Errorf("%w: %s: HTTP %s", ErrOrigin, f.URL, resp.Status)
			if resp.StatusCode >= 400 && resp.StatusCode < 500 {
				err = fmt.Errorf("%w: %w", err, errPermanent)
			}
			return File{}, err
		}
		if _, err := out.Seek(have, io.SeekStart); err != nil {
			return File{}, fmt.Errorf("weightcache: %w", err)
		}
		body := io.Reader(resp.Body)
		if f.Size > 0 {
			// One byte more than promised is enough to know it is too long.
			body = io.LimitReader(body, f.Size-have+1)
		}
		buf := make([]byte, 1<<20)
		for {
			n, rerr := body.Read(buf)
			if n > 0 {
				if f.Size > 0 && have+int64(n) > f.Size {
					return drop(fmt.Errorf("%w: %s is larger than %d bytes", ErrSizeMismatch, f.URL, f.Size))
				}
				if hook := s.writeHook; hook != nil {
					if err := hook(n); err != nil {
						return File{}, diskErr(err)
					}
				}
				if _, err := out.Write(buf[:n]); err != nil {
					return File{}, diskErr(err)
				}
				fl.wrote(out, n)
				h.Write(buf[:n])
				have += int64(n)
				progress(int64(n))
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return File{}, fmt.Errorf("%w: %s after %d bytes: %w", ErrOrigin, f.URL, have, rerr)
			}
		}
		if resp.ContentLength >= 0 && resp.StatusCode == http.StatusOK && have != resp.ContentLength {
			return File{}, fmt.Errorf("%w: %s: %d of %d bytes", ErrOrigin, f.URL, have, resp.ContentLength)
		}
		if f.Size > 0 && have < f.Size {
			return File{}, fmt.Errorf("%w: %s: %d of %d bytes", ErrOrigin, f.URL, have, f.Size)
		}
	}
done:
	file := h.file(f.Path)
	if f.SHA256 != "" && file.SHA256 != f.SHA256 {
		return drop(fmt.Errorf("%w: %s: sha256 %s, want %s", ErrHashMismatch, f.URL, file.SHA256, f.SHA256))
	}
	if err := out.Sync(); err != nil {
		return File{}, diskErr(err)
	}
	if err := out.Chmod(0o444); err != nil {
		return File{}, fmt.Errorf("weightcache: %w", err)
	}
	if err := os.Rename(pp, s.blobPath(file.SHA256)); err != nil {
		return File{}, fmt.Errorf("weightcache: %w", err)
	}
	return file, nil
}

func sortFiles(fs []File) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
}
