package weightcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// skipDirs are directories an import leaves out wherever they appear: git
// metadata (a clone of a Hugging Face repo keeps the LFS objects there a
// second time) and the Hugging Face CLI's download bookkeeping.
var skipDirs = map[string]bool{".git": true, ".cache": true}

// Add imports a model from src: a directory (its layout kept, e.g. the
// Hugging Face config.json, *.safetensors, tokenizer files) or a single
// file. Files are copied into the store while being hashed, so later
// changes to src do not reach the store. It returns the model ID; name,
// when not empty, is mapped to it.
//
// Symlinks: a symlink to a regular file is followed and the file's
// content imported under the link's path (the Hugging Face cache keeps
// snapshots as links into blobs/); a symlink to a directory, or any
// special file, is refused with ErrUnsafePath. ".git" and ".cache"
// directories are skipped, and so is a ".shoal" directory at the top (the
// manifest a materialised model carries); a ".shoal" file there is refused.
func (s *Store) Add(ctx context.Context, src, name string) (string, error) {
	if name != "" {
		if err := checkName(name); err != nil {
			return "", err
		}
	}
	srcs, err := listImport(src)
	if err != nil {
		return "", err
	}
	m := &Manifest{Version: manifestVersion, ChunkSize: s.cfg.ChunkSize, ChunkHash: ChunkHash}
	for _, f := range srcs {
		file, err := s.importFile(ctx, f.abs, f.rel)
		if err != nil {
			return "", err
		}
		m.Files = append(m.Files, file)
	}
	b, err := m.Encode()
	if err != nil {
		return "", err
	}
	id := IDOf(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	// A blob this import found already present may have gone with a model
	// removed in the meantime: then the caller adds again.
	if !s.blobsPresent(m) {
		return "", fmt.Errorf("%w: a shared file was removed during the import of %s", ErrBusy, src)
	}
	if err := s.registerLocked(id, b, m, true); err != nil {
		return "", err
	}
	if name != "" {
		if err := checkName(name); err != nil {
			return "", err
		}
		s.st.Names[name] = id
	}
	if err := s.saveLocked(); err != nil {
		return "", err
	}
	if err := s.makeRoomLocked(0, id); err != nil {
		return id, err
	}
	return id, nil
}

// registerLocked records a model's manifest and state.
func (s *Store) registerLocked(id string, b []byte, m *Manifest, complete bool) error {
	if err := writeFileAtomic(s.manifestPath(id), b, s.path(dirTmp)); err != nil {
		return err
	}
	ms := s.st.Models[id]
	if ms == nil {
		ms = &modelState{Size: m.Size()}
		s.st.Models[id] = ms
	}
	ms.Complete = ms.Complete || complete
	ms.LastUsed = s.cfg.Now()
	return nil
}

type importSrc struct{ abs, rel string }

// listImport lists the regular files to import, sorted by their path
// inside the model.
func listImport(src string) ([]importSrc, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("weightcache: %w", err)
	}
	if fi.Mode().IsRegular() {
		rel := filepath.Base(src)
		if err := checkPath(rel); err != nil {
			return nil, err
		}
		return []importSrc{{abs: src, rel: rel}}, nil
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a file or directory", ErrUnsafePath, src)
	}
	var out []importSrc
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if skipDirs[d.Name()] {
				return filepath.SkipDir
			}
			if rel == metaDir {
				// A model directory handed out by a store (or made by a
				// tool that writes its manifest there) carries its
				// manifest here; the files are the model, the manifest
				// is rebuilt from them.
				return filepath.SkipDir
			}
			return nil
		}
		t := d.Type()
		if t&fs.ModeSymlink != 0 {
			fi, err := os.Stat(p) // follow
			if err != nil {
				return fmt.Errorf("%w: dangling symlink %s", ErrUnsafePath, rel)
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("%w: symlink %s to a directory or special file", ErrUnsafePath, rel)
			}
		} else if !t.IsRegular() {
			return fmt.Errorf("%w: %s is a special file", ErrUnsafePath, rel)
		}
		if err := checkPath(rel); err != nil {
			return err
		}
		out = append(out, importSrc{abs: p, rel: rel})
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnsafePath) {
			return nil, err
		}
		return nil, fmt.Errorf("weightcache: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out, nil
}

// importFile copies one file into blobs/, hashing it whole (SHA-256) and
// per chunk (BLAKE3) in the same pass.
func (s *Store) importFile(ctx context.Context, abs, rel string) (File, error) {
	in, err := os.Open(abs)
	if err != nil {
		return File{}, fmt.Errorf("weightcache: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(s.path(dirTmp), "import-")
	if err != nil {
		return File{}, diskErr(err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	f := File{Path: rel, Chunks: []string{}}
	h := sha256.New()
	buf := make([]byte, s.cfg.ChunkSize)
	for {
		if err := ctx.Err(); err != nil {
			return File{}, err
		}
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			h.Write(buf[:n])
			f.Chunks = append(f.Chunks, chunkSum(buf[:n]))
			if _, werr := tmp.Write(buf[:n]); werr != nil {
				return File{}, diskErr(werr)
			}
			f.Size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return File{}, fmt.Errorf("weightcache: reading %s: %w", rel, err)
		}
	}
	f.SHA256 = hex.EncodeToString(h.Sum(nil))
	if err := tmp.Sync(); err != nil {
		return File{}, diskErr(err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return File{}, fmt.Errorf("weightcache: %w", err)
	}
	dst := s.blobPath(f.SHA256)
	if fi, err := os.Stat(dst); err == nil && fi.Size() == f.Size {
		return f, nil // already held (another model shares the file)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return File{}, fmt.Errorf("weightcache: %w", err)
	}
	return f, nil
}

// hashFile returns the SHA-256 hex and size of a file, telling count the
// bytes of each read; cancelling ctx stops it.
func hashFile(ctx context.Context, p string, count func(n int)) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return "", total, err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		count(n)
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), total, nil
		}
		if err != nil {
			return "", total, err
		}
	}
}

// writeFileAtomic writes b to p through a temporary file in tmpDir.
func writeFileAtomic(p string, b []byte, tmpDir string) error {
	t, err := os.CreateTemp(tmpDir, "w-")
	if err != nil {
		return diskErr(err)
	}
	defer os.Remove(t.Name())
	if _, err := t.Write(b); err != nil {
		t.Close()
		return diskErr(err)
	}
	if err := t.Close(); err != nil {
		return diskErr(err)
	}
	if err := os.Rename(t.Name(), p); err != nil {
		return fmt.Errorf("weightcache: %w", err)
	}
	return nil
}

// AddManifest records a model's manifest (checked against id) so its
// chunks can be fetched; the model is partial until every file is here.
func (s *Store) AddManifest(id string, b []byte) (*Manifest, error) {
	m, err := VerifyManifest(id, b)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	complete := s.blobsPresent(m)
	if err := s.registerLocked(id, b, m, complete); err != nil {
		return nil, err
	}
	return m, s.saveLocked()
}

// ProvideAll announces every complete model through a (the daemon calls
// it at start and every few hours, within the DHT's provider TTL). It
// returns the first error after trying them all.
func (s *Store) ProvideAll(ctx context.Context, a Announcer) error {
	var first error
	for _, id := range s.Complete() {
		if err := a.Provide(ctx, id); err != nil && first == nil {
			first = err
		}
	}
	return first
}
