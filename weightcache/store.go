package weightcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Layout of a store's directory:
//
//	blobs/<sha256>           whole verified files, mode 0444, shared by models
//	partial/<sha256>         a file being downloaded (full size, sparse)
//	partial/<sha256>.have    append-only log of its chunks written (4-byte LE index each)
//	manifests/<id>.json      exact manifest bytes of every known model
//	models/<id>/             a complete model materialised: hard links to
//	                         blobs, directories 0555, .shoal/manifest.json
//	tmp/                     imports in progress
//	state.json               names, pins, last use, completeness
const (
	dirBlobs     = "blobs"
	dirPartial   = "partial"
	dirManifests = "manifests"
	dirModels    = "models"
	dirTmp       = "tmp"
	fileState    = "state.json"
	// metaDir is the reserved directory inside a materialised model.
	metaDir = ".shoal"
	// ManifestFile is where a materialised model holds its manifest bytes,
	// relative to the model directory.
	ManifestFile = metaDir + "/manifest.json"
)

// State is where a model stands in a store.
type State string

// States of a model.
const (
	// StateComplete: every file is here and verified.
	StateComplete State = "complete"
	// StatePartial: the manifest is here, some chunks may be.
	StatePartial State = "partial"
	// StateRemote: known in the pool, nothing here (set by callers that
	// merge a store's list with the pool's; a Store never reports it).
	StateRemote State = "remote"
)

// Config configures a Store. The zero value of every field but Dir is a
// usable default.
type Config struct {
	// Dir is the store's directory (created if missing), e.g. <home>/weights.
	// Hard links need it on one file system.
	Dir string
	// MaxBytes is the size limit of blobs plus partial downloads, in bytes;
	// least recently used unpinned models are evicted to stay under it.
	// 0: no limit.
	MaxBytes int64
	// ChunkSize is the chunk size of models Add imports, in bytes; default
	// DefaultChunkSize. Fetched models keep the chunk size of their manifest.
	ChunkSize int64
	// Now is the clock for last-use times; default time.Now.
	Now func() time.Time
	// Logger; default discards.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: Dir is required", ErrConfig)
	}
	if c.MaxBytes < 0 {
		return fmt.Errorf("%w: MaxBytes %d < 0", ErrConfig, c.MaxBytes)
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = DefaultChunkSize
	}
	if c.ChunkSize < minChunkSize || c.ChunkSize > maxChunkSize {
		return fmt.Errorf("%w: ChunkSize %d outside [%d, %d]", ErrConfig, c.ChunkSize, minChunkSize, maxChunkSize)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Info describes one model in a store.
type Info struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// SizeBytes is the model's total size.
	SizeBytes int64 `json:"size_bytes"`
	State     State `json:"state"`
	// Pins counts holders (running replicas) that keep it from eviction.
	Pins     int       `json:"pins"`
	LastUsed time.Time `json:"last_used"`
}

type modelState struct {
	Size     int64     `json:"size"`
	Complete bool      `json:"complete"`
	Pins     int       `json:"pins,omitempty"`
	LastUsed time.Time `json:"last_used"`
}

type storeState struct {
	Models map[string]*modelState `json:"models"`
	// Names maps a name to a model ID.
	Names map[string]string `json:"names"`
}

// Store is a content-addressed cache of models on local disk. It is safe
// for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	st     storeState
	active map[string]*partial // models being written (fetch or import)

	// writeHook, when set (tests), runs before each chunk write and may fail it.
	writeHook func(n int) error
}

// Open opens (creating if needed) the store in cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{dirBlobs, dirPartial, dirManifests, dirModels, dirTmp} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("weightcache: %w", err)
		}
	}
	// Imports that died halfway leave only tmp files.
	if ents, err := os.ReadDir(filepath.Join(cfg.Dir, dirTmp)); err == nil {
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(cfg.Dir, dirTmp, e.Name()))
		}
	}
	s := &Store{cfg: cfg, log: cfg.Logger, active: map[string]*partial{}}
	s.st = storeState{Models: map[string]*modelState{}, Names: map[string]string{}}
	b, err := os.ReadFile(s.path(fileState))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("weightcache: %w", err)
	default:
		if err := json.Unmarshal(b, &s.st); err != nil {
			return nil, fmt.Errorf("weightcache: %s: %w", fileState, err)
		}
		if s.st.Models == nil {
			s.st.Models = map[string]*modelState{}
		}
		if s.st.Names == nil {
			s.st.Names = map[string]string{}
		}
	}
	// A model is only complete if its manifest and blobs are still there.
	for id, ms := range s.st.Models {
		m, err := s.loadManifest(id)
		if err != nil {
			s.log.Warn("dropping model with unreadable manifest", "id", id, "err", err)
			delete(s.st.Models, id)
			continue
		}
		if ms.Complete && !s.blobsPresent(m) {
			ms.Complete = false
		}
	}
	return s, s.saveLocked()
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.cfg.Dir }

func (s *Store) path(parts ...string) string {
	return filepath.Join(append([]string{s.cfg.Dir}, parts...)...)
}

func (s *Store) blobPath(sha string) string    { return s.path(dirBlobs, sha) }
func (s *Store) partialPath(sha string) string { return s.path(dirPartial, sha) }
func (s *Store) modelDir(id string) string     { return s.path(dirModels, id) }
func (s *Store) manifestPath(id string) string { return s.path(dirManifests, id+".json") }

func (s *Store) blobsPresent(m *Manifest) bool {
	for _, f := range m.Files {
		fi, err := os.Stat(s.blobPath(f.SHA256))
		if err != nil || fi.Size() != f.Size {
			return false
		}
	}
	return true
}

// loadManifest reads a stored manifest and checks it against id (verify on read).
func (s *Store) loadManifest(id string) (*Manifest, error) {
	b, err := os.ReadFile(s.manifestPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("weightcache: %w", err)
	}
	return VerifyManifest(id, b)
}

// ManifestBytes returns the exact manifest bytes of a model this store
// knows (complete or partial), checked against its ID.
func (s *Store) ManifestBytes(ref string) ([]byte, error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.manifestPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("weightcache: %w", err)
	}
	if IDOf(b) != id {
		return nil, fmt.Errorf("%w: stored manifest of %s", ErrManifestMismatch, id)
	}
	return b, nil
}

// Manifest returns the decoded manifest of a model this store knows.
func (s *Store) Manifest(ref string) (*Manifest, error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	return s.loadManifest(id)
}

// saveLocked writes state.json atomically. s.mu held (or not yet shared).
func (s *Store) saveLocked() error {
	b, err := json.MarshalIndent(&s.st, "", "  ")
	if err != nil {
		return fmt.Errorf("weightcache: %w", err)
	}
	tmp := s.path(fileState + ".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return diskErr(err)
	}
	if err := os.Rename(tmp, s.path(fileState)); err != nil {
		return fmt.Errorf("weightcache: %w", err)
	}
	return nil
}

// Resolve maps a model ID or a name to a model ID this store knows.
func (s *Store) Resolve(ref string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resolveLocked(ref)
}

func (s *Store) resolveLocked(ref string) (string, error) {
	if CheckID(ref) == nil {
		if _, ok := s.st.Models[ref]; ok {
			return ref, nil
		}
		return "", fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	if id, ok := s.st.Names[ref]; ok {
		return id, nil
	}
	return "", fmt.Errorf("%w: %q", ErrNotFound, ref)
}

// SetName maps name to model id (replacing what it named before). A name
// cannot look like a model ID.
func (s *Store) SetName(name, id string) error {
	if err := checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.st.Models[id]; !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	s.st.Names[name] = id
	return s.saveLocked()
}

func (s *Store) nameOfLocked(id string) string {
	var names []string
	for n, v := range s.st.Names {
		if v == id {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// List describes every model in the store, most recently used first.
func (s *Store) List() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.st.Models))
	for id, ms := range s.st.Models {
		out = append(out, s.infoLocked(id, ms))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastUsed.Equal(out[j].LastUsed) {
			return out[i].LastUsed.After(out[j].LastUsed)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Stat describes one model.
func (s *Store) Stat(ref string) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.resolveLocked(ref)
	if err != nil {
		return Info{}, err
	}
	return s.infoLocked(id, s.st.Models[id]), nil
}

func (s *Store) infoLocked(id string, ms *modelState) Info {
	st := StatePartial
	if ms.Complete {
		st = StateComplete
	}
	return Info{ID: id, Name: s.nameOfLocked(id), SizeBytes: ms.Size, State: st, Pins: ms.Pins, LastUsed: ms.LastUsed}
}

// Complete lists the IDs of complete models, sorted: what a node announces
// in its record for locality-aware placement.
func (s *Store) Complete() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, ms := range s.st.Models {
		if ms.Complete {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Path returns the read-only directory of a complete model, materialising
// it (hard links to the verified blobs plus .shoal/manifest.json) if
// needed, and marks the model used. Contents were verified when they
// entered the store; Verify re-checks them.
func (s *Store) Path(ref string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.resolveLocked(ref)
	if err != nil {
		return "", err
	}
	ms := s.st.Models[id]
	if !ms.Complete {
		return "", fmt.Errorf("%w: %s", ErrIncomplete, id)
	}
	dir := s.modelDir(id)
	if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err != nil {
		if err := s.materialise(id); err != nil {
			return "", err
		}
	}
	ms.LastUsed = s.cfg.Now()
	return dir, s.saveLocked()
}

// materialise builds models/<id> in a temporary directory and renames it
// into place, so a half-built directory is never visible.
func (s *Store) materialise(id string) error {
	b, err := os.ReadFile(s.manifestPath(id))
	if err != nil {
		return fmt.Errorf("weightcache: %w", err)
	}
	m, err := VerifyManifest(id, b)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.path(dirTmp), "model-")
	if err != nil {
		return diskErr(err)
	}
	fail := func(err error) error {
		_ = removeTree(tmp)
		return err
	}
	var dirs []string
	mkdir := func(d string) error {
		if _, err := os.Stat(d); err == nil {
			return nil
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return diskErr(err)
		}
		for x := d; x != tmp; x = filepath.Dir(x) {
			dirs = append(dirs, x)
		}
		return nil
	}
	for _, f := range m.Files {
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := mkdir(filepath.Dir(dst)); err != nil {
			return fail(err)
		}
		if err := os.Link(s.blobPath(f.SHA256), dst); err != nil {
			return fail(fmt.Errorf("weightcache: linking %s: %w", f.Path, err))
		}
	}
	meta := filepath.Join(tmp, metaDir)
	if err := mkdir(meta); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ManifestFile), b, 0o444); err != nil {
		return fail(diskErr(err))
	}
	// Deepest first, so a parent is made read-only after its children.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range append(dirs, tmp) {
		if err := os.Chmod(d, 0o555); err != nil {
			return fail(fmt.Errorf("weightcache: %w", err))
		}
	}
	dst := s.modelDir(id)
	_ = removeTree(dst)
	if err := os.Rename(tmp, dst); err != nil {
		return fail(fmt.Errorf("weightcache: %w", err))
	}
	return nil
}

// removeTree removes a tree that may hold read-only directories.
func removeTree(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// Pin keeps a model from eviction and removal; pins count (one per
// running replica), Unpin releases one.
func (s *Store) Pin(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.resolveLocked(ref)
	if err != nil {
		return err
	}
	ms := s.st.Models[id]
	ms.Pins++
	ms.LastUsed = s.cfg.Now()
	return s.saveLocked()
}

// Unpin releases one pin; unpinning an unpinned model is a no-op.
func (s *Store) Unpin(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.resolveLocked(ref)
	if err != nil {
		return err
	}
	if ms := s.st.Models[id]; ms.Pins > 0 {
		ms.Pins--
	}
	return s.saveLocked()
}

// Remove deletes a model (its directory, manifest, names, and every blob
// or partial file no other model uses). A pinned model or one being
// fetched is refused.
func (s *Store) Remove(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.resolveLocked(ref)
	if err != nil {
		return err
	}
	return s.removeLocked(id)
}

func (s *Store) removeLocked(id string) error {
	ms := s.st.Models[id]
	if ms.Pins > 0 {
		return fmt.Errorf("%w: %s (%d pins)", ErrPinned, id, ms.Pins)
	}
	if _, ok := s.active[id]; ok {
		return fmt.Errorf("%w: %s", ErrBusy, id)
	}
	m, _ := s.loadManifest(id)
	delete(s.st.Models, id)
	for n, v := range s.st.Names {
		if v == id {
			delete(s.st.Names, n)
		}
	}
	if err := removeTree(s.modelDir(id)); err != nil {
		return fmt.Errorf("weightcache: %w", err)
	}
	if m != nil {
		used := s.usedBlobsLocked()
		for _, f := range m.Files {
			if !used[f.SHA256] {
				_ = os.Remove(s.blobPath(f.SHA256))
				_ = os.Remove(s.partialPath(f.SHA256))
				_ = os.Remove(s.partialPath(f.SHA256) + ".have")
			}
		}
	}
	_ = os.Remove(s.manifestPath(id))
	return s.saveLocked()
}

// usedBlobsLocked is the set of file hashes some known model needs.
func (s *Store) usedBlobsLocked() map[string]bool {
	used := map[string]bool{}
	for id := range s.st.Models {
		m, err := s.loadManifest(id)
		if err != nil {
			continue
		}
		for _, f := range m.Files {
			used[f.SHA256] = true
		}
	}
	return used
}

// Usage is the bytes the store holds: blobs plus partial files at their
// full size (a partial download reserves what it will need).
func (s *Store) Usage() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usageLocked()
}

func (s *Store) usageLocked() int64 {
	var n int64
	for _, d := range []string{dirBlobs, dirPartial} {
		ents, _ := os.ReadDir(s.path(d))
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && filepath.Ext(e.Name()) != ".have" {
				n += fi.Size()
			}
		}
	}
	return n
}

// makeRoomLocked evicts least recently used models, never a pinned or
// busy one nor keep, until need more bytes fit under MaxBytes.
func (s *Store) makeRoomLocked(need int64, keep string) error {
	if s.cfg.MaxBytes == 0 {
		return nil
	}
	for {
		use := s.usageLocked()
		if use+need <= s.cfg.MaxBytes {
			return nil
		}
		victim := ""
		var at time.Time
		for id, ms := range s.st.Models {
			if id == keep || ms.Pins > 0 || s.active[id] != nil {
				continue
			}
			if victim == "" || ms.LastUsed.Before(at) || ms.LastUsed.Equal(at) && id < victim {
				victim, at = id, ms.LastUsed
			}
		}
		if victim == "" {
			return fmt.Errorf("%w: %d bytes used + %d needed > limit %d", ErrCacheFull, use, need, s.cfg.MaxBytes)
		}
		s.log.Info("evicting model", "id", victim, "last_used", at)
		if err := s.removeLocked(victim); err != nil {
			return err
		}
	}
}

// Evict evicts least recently used unpinned models until the store is
// within its size limit.
func (s *Store) Evict() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.makeRoomLocked(0, "")
}

// Verify re-hashes every file of a complete model against its manifest,
// calling progress (when not nil) as it goes. A file that fails (its
// hash, ErrHashMismatch; its size, ErrSizeMismatch; or reading it) has
// its blob dropped (see dropBlob), so the model is fetched again rather
// than served, and the error names it. Cancelling ctx stops it and
// changes nothing.
func (s *Store) Verify(ctx context.Context, ref string, progress func(Progress)) error {
	id, err := s.Resolve(ref)
	if err != nil {
		return err
	}
	if info, err := s.Stat(id); err != nil {
		return err
	} else if info.State != StateComplete {
		return fmt.Errorf("%w: %s", ErrIncomplete, id)
	}
	m, err := s.loadManifest(id)
	if err != nil {
		return err
	}
	start := time.Now()
	prog := Progress{ID: id, TotalBytes: m.Size()}
	count := func(n int) {
		prog.DoneBytes += int64(n)
		if progress != nil {
			prog.Elapsed = time.Since(start)
			progress(prog)
		}
	}
	for _, f := range m.Files {
		sum, n, err := hashFile(ctx, s.blobPath(f.SHA256), count)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err != nil:
			err = fmt.Errorf("weightcache: verifying %s: %w", f.Path, err)
		case n != f.Size:
			err = fmt.Errorf("%w: %s: %d bytes on disk, manifest says %d", ErrSizeMismatch, f.Path, n, f.Size)
		case sum != f.SHA256:
			err = fmt.Errorf("%w: %s: sha256 on disk %s, manifest says %s", ErrHashMismatch, f.Path, sum, f.SHA256)
		}
		if err != nil {
			s.dropBlob(f.SHA256)
			return err
		}
	}
	return nil
}

// dropBlob removes blob sha, found not to match its hash, and marks every
// complete model with a file of that hash partial (its directory goes
// too): those models are fetched again rather than served. A download in
// progress that counted on the blob fails, so it does not complete
// without it (the next one fetches the file).
func (s *Store) dropBlob(sha string) {
	uses := func(m *Manifest) bool {
		return slices.ContainsFunc(m.Files, func(f File) bool { return f.SHA256 == sha })
	}
	s.mu.Lock()
	var ids []string
	for id, ms := range s.st.Models {
		if ms.Complete {
			ids = append(ids, id)
		}
	}
	var downloads []*partial
	for _, p := range s.active {
		if uses(p.l.m) {
			downloads = append(downloads, p)
		}
	}
	s.mu.Unlock()
	for _, p := range downloads {
		p.abort(fmt.Errorf("%w: blob %s, which this download shares with another model, failed verification", ErrHashMismatch, sha))
	}
	var hit []string
	for _, id := range ids {
		if m, err := s.loadManifest(id); err == nil && uses(m) {
			hit = append(hit, id)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range hit {
		if ms := s.st.Models[id]; ms != nil {
			ms.Complete = false
		}
		_ = removeTree(s.modelDir(id))
	}
	_ = os.Remove(s.blobPath(sha))
	if err := s.saveLocked(); err != nil {
		s.log.Warn("could not record models made partial by a damaged blob", "blob", sha, "err", err)
	}
}

// diskErr marks running out of space with ErrDiskFull.
func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return fmt.Errorf("weightcache: %w", err)
}

// checkName accepts a model name: 1 to 256 bytes that do not parse as a
// model ID (so a reference is never ambiguous).
func checkName(name string) error {
	if name == "" || len(name) > 256 || CheckID(name) == nil {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	return nil
}
