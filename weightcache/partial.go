package weightcache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// partial is a model being written by one fetch and read by the server at
// the same time. Chunks enter it only verified; a file becomes a blob only
// once its whole-file SHA-256 matches too.
//
// Concurrency: write and read may be called from any goroutine; finish is
// called by the fetch that opened it, and close once, by the same owner.
type partial struct {
	s  *Store
	id string
	l  *layout

	mu   sync.Mutex
	cond *sync.Cond
	// have marks the chunks held: each was verified as it was stored
	// (in memory before a fetch wrote it, re-read on resume, hashed
	// whole by an import), so read and view serve it without hashing it
	// again. The fetcher checks every chunk anyway, and reports one that
	// fails (see Server.checkReported): that is how a disk that rotted
	// under a blob is found.
	have  []bool
	nhave int
	// writing marks chunks a write is storing: another copy arriving
	// meanwhile (end game, a substitute) waits for its outcome, and is
	// dropped if it was stored (not written twice: the file may become a
	// blob as soon as the first write is done) or stored if it failed.
	writing []bool
	files   []*pfile
	subs    map[chan int]struct{}
	failed  error // set by abort: wakes and stops finish
	refs    int   // owner plus server sessions; files close at 0
	closed  bool  // the owner is done: subscriptions are closed

	// peers receives the members the server is sending this download's
	// chunks to (nil for a complete model): they fetch it too, so the
	// fetch takes them as sources without waiting for a lookup.
	peers chan peer.ID
}

type pfile struct {
	f    *os.File // partial file (read-write) or blob (read-only)
	log  *os.File // have log; nil once the file is a blob
	done bool     // the file is a verified blob

	// The whole-file SHA-256 follows the file in chunk order: write hashes
	// a chunk from memory when it is the next one, finish reads back the
	// ones that came out of order (and those resumed from disk).
	hmu  sync.Mutex
	h    hash.Hash
	next int // first chunk (model index) not yet in h

	// mm maps the file read-only once a session serves a chunk of it
	// over a bulk connection (see view); mapped says the mapping was tried. Both under
	// partial.mu; unmapped when the last reference is released.
	mm     []byte
	mapped bool

	// fl flushes a partial file's writes in the background as they
	// accumulate (see flushEvery).
	fl flusher
}

// openPartial opens model id for writing. Chunks already held (complete
// blobs, or chunks listed in a have log that still verify) count as had.
func (s *Store) openPartial(id string) (*partial, error) {
	m, err := s.loadManifest(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.active[id] != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrBusy, id)
	}
	p := &partial{s: s, id: id, l: newLayout(m), subs: map[chan int]struct{}{}, refs: 1, peers: make(chan peer.ID, 16)}
	p.cond = sync.NewCond(&p.mu)
	p.have = make([]bool, len(p.l.chunks))
	p.writing = make([]bool, len(p.l.chunks))
	s.active[id] = p
	s.mu.Unlock()
	for i, f := range m.Files {
		pf, err := p.openFile(i, f)
		if err != nil {
			p.close()
			return nil, err
		}
		p.files = append(p.files, pf)
	}
	return p, nil
}

func (p *partial) openFile(i int, f File) (*pfile, error) {
	first, last := p.l.first[i], p.l.first[i+1]
	if b, err := os.Open(p.s.blobPath(f.SHA256)); err == nil {
		if fi, err := b.Stat(); err == nil && fi.Size() == f.Size {
			for c := first; c < last; c++ {
				p.have[c] = true
			}
			p.nhave += last - first
			return &pfile{f: b, done: true}, nil
		}
		b.Close()
	}
	pp := p.s.partialPath(f.SHA256)
	w, err := os.OpenFile(pp, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, diskErr(err)
	}
	fi, err := w.Stat()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("weightcache: %w", err)
	}
	if fi.Size() != f.Size {
		// Longer than the manifest says: cut; shorter: extend (sparse).
		if err := w.Truncate(f.Size); err != nil {
			w.Close()
			return nil, diskErr(err)
		}
	}
	if err := allocate(w, f.Size); err != nil {
		w.Close()
		return nil, fmt.Errorf("%w (reserving %d bytes for %s under %s)", diskErr(err), f.Size, f.Path, p.s.cfg.Dir)
	}
	// Resume: trust the have log only as far as the chunks still verify.
	if logb, err := os.ReadFile(pp + ".have"); err == nil {
		buf := make([]byte, p.l.m.ChunkSize)
		for len(logb) >= 4 {
			c := first + int(binary.LittleEndian.Uint32(logb))
			logb = logb[4:]
			if c >= last || p.have[c] {
				continue
			}
			ch := p.l.chunks[c]
			if _, err := w.ReadAt(buf[:ch.n], ch.off); err != nil && !errors.Is(err, io.EOF) {
				continue
			}
			if p.l.verifyChunk(c, buf[:ch.n]) {
				p.have[c] = true
				p.nhave++
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		w.Close()
		return nil, fmt.Errorf("weightcache: %w", err)
	}
	lg, err := os.OpenFile(pp+".have", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		w.Close()
		return nil, diskErr(err)
	}
	pf := &pfile{f: w, log: lg, h: sha256.New(), next: first}
	return pf, nil
}

// has reports whether chunk i is held.
func (p *partial) has(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.have[i]
}

// bitfield is the have-map: bit i (MSB first) set when chunk i is held.
func (p *partial) bitfield() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return encodeHaveMap(p.have)
}

// whole reports whether every chunk is held.
func (p *partial) whole() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nhave == len(p.have)
}

// haveBytes is the size of the chunks held.
func (p *partial) haveBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for i, h := range p.have {
		if h {
			n += int64(p.l.chunks[i].n)
		}
	}
	return n
}

// subscribe returns a channel that receives the index of every chunk
// written from now on, and the have-map at the moment of subscribing.
func (p *partial) subscribe() (chan int, []byte) {
	bf := p.bitfield()
	ch := make(chan int, len(p.have))
	p.mu.Lock()
	if p.closed {
		close(ch)
		p.mu.Unlock()
		return ch, bf
	}
	p.subs[ch] = struct{}{}
	// Chunks written between bitfield() and now: announce them.
	for i, h := range p.have {
		if h && bf[i/8]&(0x80>>(i%8)) == 0 {
			ch <- i
		}
	}
	p.mu.Unlock()
	return ch, bf
}

// offerPeer tells the fetch writing p that peer q fetches the model too;
// it drops the news when nobody is listening.
func (p *partial) offerPeer(q peer.ID) {
	select {
	case p.peers <- q:
	default:
	}
}

func (p *partial) unsubscribe(ch chan int) {
	p.mu.Lock()
	delete(p.subs, ch)
	p.mu.Unlock()
}

// write verifies chunk i and stores it; a chunk that fails its hash
// gives errBadChunk. A chunk already held is not written again (end-game
// duplicates, substitutes). It reports whether it wrote.
func (p *partial) write(i int, data []byte) (wrote bool, err error) {
	p.mu.Lock()
	// Another copy of the chunk being stored decides first: if it turns
	// out bad, this one is stored instead. Taken as a duplicate at once,
	// a good copy would be dropped and the chunk never asked for again.
	for p.writing[i] && !p.have[i] {
		p.cond.Wait()
	}
	dup := p.have[i]
	if !dup {
		p.writing[i] = true
	}
	p.mu.Unlock()
	if dup {
		// Still checked: a peer sending a bad copy of a chunk held is a
		// peer sending bad chunks.
		if !p.l.verifyChunk(i, data) {
			return false, errBadChunk
		}
		return false, nil
	}
	defer func() {
		if err != nil {
			p.mu.Lock()
			p.writing[i] = false
			p.cond.Broadcast() // a copy waiting in write goes ahead
			p.mu.Unlock()
		}
	}()
	c := p.l.chunks[i]
	pf := p.files[c.file]
	if h := p.s.writeHook; h != nil {
		if err := h(len(data)); err != nil {
			return false, diskErr(err)
		}
	}
	// The bytes go to the file (on another core) while they are checked
	// against the chunk's hash: they count only once both are done, and
	// a bad chunk's bytes are left for the next copy to overwrite. The
	// chunk next in its file's order then goes into the file's SHA-256
	// before it is marked held, so finish never reads it back.
	written := make(chan error, 1)
	go func() {
		_, err := pf.f.WriteAt(data, c.off)
		written <- err
	}()
	good := p.l.verifyChunk(i, data)
	pf.hmu.Lock()
	hashed := good && pf.next == i
	if hashed {
		pf.h.Write(data)
	} else {
		pf.hmu.Unlock()
	}
	err = <-written
	if err == nil && good {
		var rec [4]byte
		binary.LittleEndian.PutUint32(rec[:], uint32(i-p.l.first[c.file]))
		_, err = pf.log.Write(rec[:])
	}
	if hashed {
		if err == nil {
			pf.next++
		} else {
			// The hash took a chunk that is not held: start it over;
			// finish reads the file back from its first chunk.
			pf.h.Reset()
			pf.next = p.l.first[c.file]
		}
		pf.hmu.Unlock()
	}
	if err != nil {
		return false, diskErr(err)
	}
	if !good {
		err = errBadChunk
		return false, err
	}
	pf.fl.wrote(pf.f, len(data))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.have[i] {
		return false, nil
	}
	p.have[i] = true
	p.nhave++
	for ch := range p.subs {
		select {
		case ch <- i: // one slot per chunk: only a re-fetched chunk could find it full
		default:
		}
	}
	p.cond.Broadcast()
	return true, nil
}

// read returns chunk i, held, read into buf.
func (p *partial) read(i int, buf []byte) ([]byte, error) {
	if !p.has(i) {
		return nil, fmt.Errorf("%w: chunk %d not held", ErrIncomplete, i)
	}
	c := p.l.chunks[i]
	buf = buf[:c.n]
	if _, err := p.files[c.file].f.ReadAt(buf, c.off); err != nil && !(errors.Is(err, io.EOF) && c.n == 0) {
		return nil, fmt.Errorf("weightcache: reading chunk %d: %w", i, err)
	}
	return buf, nil
}

// view returns held chunk i as a slice of its file's read-only mapping,
// so it is sent without being copied out of the page cache first. It
// returns nil when the chunk is not held or the file cannot be mapped:
// the caller reads it with read. The slice is valid until the caller's
// reference is released; read it through readMapped.
func (p *partial) view(i int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.have[i] {
		return nil
	}
	c := p.l.chunks[i]
	mm := p.mappingLocked(c.file)
	if mm == nil {
		return nil
	}
	return mm[c.off : c.off+int64(c.n)]
}

// damaged handles chunk i found not to match its hash on disk: its blob,
// if the file is one, is dropped from the store (see dropBlob), and a
// download of the model in progress fails with err (the next one
// re-verifies what is on disk).
func (p *partial) damaged(i int, err error) {
	// First, so that a download of this very model fails with err, not
	// with dropBlob's message for downloads sharing the blob.
	p.abort(err)
	fi := p.l.chunks[i].file
	p.mu.Lock()
	blob := p.files[fi].done
	p.mu.Unlock()
	if blob {
		p.s.dropBlob(p.l.m.Files[fi].SHA256)
	}
}

// mapping is file fi's read-only shared mapping, made on first use, or
// nil where it cannot be mapped (empty, or the platform does not map).
// It stays valid until the last reference is released.
func (p *partial) mapping(fi int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mappingLocked(fi)
}

func (p *partial) mappingLocked(fi int) []byte {
	pf := p.files[fi]
	if !pf.mapped {
		pf.mapped = true
		mm, err := mapFile(pf.f, p.l.m.Files[fi].Size)
		if err != nil {
			p.s.log.Debug("weight file not mapped; chunks are read instead", "id", p.id, "file", p.l.m.Files[fi].Path, "err", err)
		}
		pf.mm = mm
	}
	return pf.mm
}

// abort stops finish with err.
func (p *partial) abort(err error) {
	p.mu.Lock()
	if p.failed == nil {
		p.failed = err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// waitChunk blocks until chunk i is held, or the partial is aborted.
func (p *partial) waitChunk(i int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.have[i] && p.failed == nil {
		p.cond.Wait()
	}
	if p.have[i] {
		return nil
	}
	return p.failed
}

// finish follows the download file by file and turns each file into a
// blob once its whole-file SHA-256 matches. write hashes chunks that
// arrive in order from memory (rarest-first breaks ties by index, so most
// do); finish reads back the rest as the chunks before them arrive. It
// returns when every file is a blob, or with the abort error. The caller
// then calls complete.
func (p *partial) finish(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { p.abort(ctx.Err()) })
	defer stop()
	var buf []byte
	for fi, f := range p.l.m.Files {
		pf := p.files[fi]
		if pf.done {
			continue
		}
		last := p.l.first[fi+1]
		// Chunks are hashed straight from the file's mapping, where it
		// can be mapped, instead of being read into a buffer first.
		mm := p.mapping(fi)
		for {
			pf.hmu.Lock()
			for pf.next < last && p.has(pf.next) {
				ch := p.l.chunks[pf.next]
				var err error
				if mm != nil {
					err = readMapped(f.Path, func() error {
						pf.h.Write(mm[ch.off : ch.off+int64(ch.n)])
						return nil
					})
				} else {
					if buf == nil {
						buf = make([]byte, p.l.m.ChunkSize)
					}
					if _, err = pf.f.ReadAt(buf[:ch.n], ch.off); err != nil {
						err = fmt.Errorf("weightcache: %w", err)
					} else {
						pf.h.Write(buf[:ch.n])
					}
				}
				if err != nil {
					pf.hmu.Unlock()
					return err
				}
				pf.next++
			}
			next := pf.next
			pf.hmu.Unlock()
			if next == last {
				break
			}
			if err := p.waitChunk(next); err != nil {
				return err
			}
		}
		if got := hex.EncodeToString(pf.h.Sum(nil)); got != f.SHA256 {
			// Every chunk matched but the whole does not: the manifest
			// contradicts itself. Nothing of this file can be trusted.
			p.dropFile(fi)
			return fmt.Errorf("%w: %s: file sha256 %s, manifest says %s", ErrHashMismatch, f.Path, got, f.SHA256)
		}
		if err := p.promote(fi); err != nil {
			return err
		}
	}
	return nil
}

// promote turns verified file fi into a blob.
func (p *partial) promote(fi int) error {
	f := p.l.m.Files[fi]
	pf := p.files[fi]
	if err := pf.f.Sync(); err != nil {
		return diskErr(err)
	}
	if err := pf.f.Chmod(0o444); err != nil {
		return fmt.Errorf("weightcache: %w", err)
	}
	pp := p.s.partialPath(f.SHA256)
	if err := os.Rename(pp, p.s.blobPath(f.SHA256)); err != nil {
		return fmt.Errorf("weightcache: %w", err)
	}
	pf.log.Close()
	pf.log = nil
	_ = os.Remove(pp + ".have")
	p.mu.Lock()
	pf.done = true
	p.mu.Unlock()
	return nil
}

func (p *partial) dropFile(fi int) {
	f := p.l.m.Files[fi]
	pp := p.s.partialPath(f.SHA256)
	_ = os.Remove(pp + ".have")
	_ = os.Remove(pp)
	p.mu.Lock()
	for c := p.l.first[fi]; c < p.l.first[fi+1]; c++ {
		p.writing[c] = false
		if p.have[c] {
			p.have[c] = false
			p.nhave--
		}
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// complete marks the model complete in the store.
func (p *partial) complete() error {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.st.Models[p.id]
	if ms == nil {
		return fmt.Errorf("%w: %s removed while fetching", ErrNotFound, p.id)
	}
	ms.Complete = true
	ms.LastUsed = s.cfg.Now()
	return s.saveLocked()
}

// close ends the owner's use, after every writer has stopped: the model
// is no longer busy, subscriptions close (a session serving this download
// ends, and its fetcher may come back to whatever serves the model next),
// and the files close once no server session reads them either.
func (p *partial) close() {
	p.abort(ErrClosed)
	p.s.mu.Lock()
	if p.s.active[p.id] == p {
		delete(p.s.active, p.id)
	}
	p.s.mu.Unlock()
	p.mu.Lock()
	p.closed = true
	for ch := range p.subs {
		close(ch)
	}
	p.subs = map[chan int]struct{}{}
	p.mu.Unlock()
	p.release()
}

func (p *partial) release() {
	p.mu.Lock()
	p.refs--
	last := p.refs == 0
	p.mu.Unlock()
	if !last {
		return
	}
	for _, pf := range p.files {
		pf.fl.wait()
		if pf.mm != nil {
			_ = unmapFile(pf.mm)
			pf.mm = nil
		}
		pf.f.Close()
		if pf.log != nil {
			pf.log.Close()
		}
	}
}

// openReader returns model id for serving: the partial being written, or
// a read-only view of a complete model. The caller releases it.
func (s *Store) openReader(id string) (*partial, error) {
	s.mu.Lock()
	if p := s.active[id]; p != nil {
		p.mu.Lock()
		p.refs++
		p.mu.Unlock()
		s.mu.Unlock()
		return p, nil
	}
	ms := s.st.Models[id]
	s.mu.Unlock()
	if ms == nil || !ms.Complete {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	m, err := s.loadManifest(id)
	if err != nil {
		return nil, err
	}
	p := &partial{s: s, id: id, l: newLayout(m), subs: map[chan int]struct{}{}, refs: 1}
	p.cond = sync.NewCond(&p.mu)
	p.have = make([]bool, len(p.l.chunks))
	for i := range p.have {
		p.have[i] = true
	}
	p.nhave = len(p.have)
	for _, f := range m.Files {
		b, err := os.Open(s.blobPath(f.SHA256))
		if err != nil {
			p.release()
			return nil, fmt.Errorf("%w: %s: %v", ErrIncomplete, id, err)
		}
		p.files = append(p.files, &pfile{f: b, done: true})
	}
	return p, nil
}
