package weightcache

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Dialer opens streams to pool members; *mesh.Node satisfies it.
type Dialer interface {
	OpenStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error)
}

// Finder lists members that announced a key; *mesh.Node satisfies it.
type Finder interface {
	FindProviders(ctx context.Context, key string, max int) ([]peer.AddrInfo, error)
}

// Announcer announces that this node serves a key; *mesh.Node satisfies it.
type Announcer interface {
	Provide(ctx context.Context, key string) error
}

// FetchConfig tunes a Fetcher. Zero fields take the defaults noted.
type FetchConfig struct {
	// MaxPeers is how many providers one fetch downloads from at once; default 8.
	MaxPeers int
	// Pipeline is the number of chunk requests in flight per peer; default
	// 4 (16 MiB at the default chunk size: enough to keep a loopback or LAN
	// link busy across the request round trip).
	Pipeline int
	// StallTimeout drops a peer that sends nothing for this long while it
	// owes chunks (its requests go to other peers); default 15 s.
	StallTimeout time.Duration
	// Refresh is how often a fetch with fewer than MaxPeers sources asks
	// the DHT for more providers; default 5 s.
	Refresh time.Duration
	// MaxDup bounds end-game duplicate requests per chunk; default 2.
	MaxDup int
	// Now is the clock for progress reports; default time.Now.
	Now func() time.Time
	// Traffic counts the bytes moved over bulk connections.
	Traffic Traffic
	// Seed picks where in the model this node starts among chunks that are
	// equally rare (see picker); zero draws one at random. Fetchers that
	// start at different places have chunks to trade from the first
	// seconds; the daemon derives it from the node's peer ID.
	Seed uint64
}

// rotation is the chunk index this fetcher starts from among n.
func (c *FetchConfig) rotation(n int) int {
	if n == 0 {
		return 0
	}
	seed := c.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.BigEndian.Uint64(b[:])
	}
	return int(seed % uint64(n))
}

func (c *FetchConfig) validate() error {
	if c.MaxPeers < 0 || c.Pipeline < 0 || c.StallTimeout < 0 || c.Refresh < 0 || c.MaxDup < 0 {
		return fmt.Errorf("%w: negative value in FetchConfig", ErrConfig)
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = 8
	}
	if c.Pipeline == 0 {
		c.Pipeline = 4
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 15 * time.Second
	}
	if c.Refresh == 0 {
		c.Refresh = 5 * time.Second
	}
	if c.MaxDup == 0 {
		c.MaxDup = 2
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Progress is a snapshot of one fetch, for a progress bar or a log line.
type Progress struct {
	ID string
	// DoneBytes is verified bytes held (resumed ones included); TotalBytes the model size.
	DoneBytes, TotalBytes int64
	// FetchedBytes is chunk bytes received in this fetch, duplicates and
	// rejected chunks included.
	FetchedBytes int64
	// Peers is the number of sources connected now.
	Peers   int
	Elapsed time.Duration
	// resumed is DoneBytes at the start.
	resumed int64
}

// Rate is the verified bytes per second gained in this fetch.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.DoneBytes-p.resumed) / p.Elapsed.Seconds()
}

// ETA is the time left at the current rate (0 when unknown or done).
func (p Progress) ETA() time.Duration {
	r := p.Rate()
	if r <= 0 || p.DoneBytes >= p.TotalBytes {
		return 0
	}
	return time.Duration(float64(p.TotalBytes-p.DoneBytes) / r * float64(time.Second))
}

// FetchStats sums up one fetch.
type FetchStats struct {
	// FetchedBytes is chunk payload received; WastedBytes the part of it
	// discarded (end-game duplicates, chunks that failed verification).
	FetchedBytes, WastedBytes int64
	// ResumedBytes were already held and verified when the fetch began.
	ResumedBytes int64
	// Peers is the number of providers a session was opened with.
	Peers int
	// Banned are the peers banned in this fetch for sending bad chunks.
	Banned []peer.ID
	// Transports counts chunk sessions by the transport they rode
	// ("tcp", "quic-v1", ...): bulk data is 2-3x cheaper over TCP.
	Transports map[string]int
}

// Fetcher downloads models into a store from pool members: manifest
// first, then chunks from several providers at once. It is safe for
// concurrent use; one model is fetched by one call at a time.
type Fetcher struct {
	store *Store
	dial  Dialer
	find  Finder
	ann   Announcer // may be nil
	cfg   FetchConfig
	log   *slog.Logger

	mu     sync.Mutex
	bans   map[string]map[peer.ID]bool // model ID → peers that sent it bad data
	noBulk map[peer.ID]time.Time       // peers not asked for bulk connections until then
}

// NewFetcher returns a fetcher for st over the mesh (dial, find; ann may
// be nil, else a fetch announces itself as a provider as soon as it
// starts, so others can take chunks from it while it downloads).
func NewFetcher(st *Store, dial Dialer, find Finder, ann Announcer, cfg FetchConfig) (*Fetcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Fetcher{store: st, dial: dial, find: find, ann: ann, cfg: cfg, log: st.log, bans: map[string]map[peer.ID]bool{}, noBulk: map[peer.ID]time.Time{}}, nil
}

// Banned lists the peers banned for model id.
func (f *Fetcher) Banned(id string) []peer.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []peer.ID
	for p := range f.bans[id] {
		out = append(out, p)
	}
	return out
}

func (f *Fetcher) banned(id string, p peer.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bans[id][p]
}

func (f *Fetcher) ban(id string, p peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bans[id] == nil {
		f.bans[id] = map[peer.ID]bool{}
	}
	f.bans[id][p] = true
}

// Fetch makes model id complete in the store, resuming from whatever
// verified chunks are already there. progress, when not nil, is called
// after every chunk (from the fetch's goroutines, one call at a time).
func (f *Fetcher) Fetch(ctx context.Context, id string, progress func(Progress)) (FetchStats, error) {
	if err := CheckID(id); err != nil {
		return FetchStats{}, err
	}
	if info, err := f.store.Stat(id); err == nil && info.State == StateComplete {
		return FetchStats{}, nil
	}
	if _, err := f.store.Manifest(id); err != nil {
		if err := f.fetchManifest(ctx, id); err != nil {
			return FetchStats{}, err
		}
	}
	if err := f.store.reserve(id); err != nil {
		return FetchStats{}, err
	}
	p, err := f.store.openPartial(id)
	if err != nil {
		return FetchStats{}, err
	}
	defer p.close()
	ft := &fetch{f: f, id: id, p: p, progress: progress, start: f.cfg.Now(), attempts: map[peer.ID]int{}, running: map[peer.ID]bool{}, wake: make(chan struct{})}
	ft.prog = Progress{ID: id, TotalBytes: p.l.m.Size(), DoneBytes: p.haveBytes()}
	ft.prog.resumed = ft.prog.DoneBytes
	ft.stats.ResumedBytes = ft.prog.DoneBytes
	ft.pk = newPicker(p.have, f.cfg.MaxDup, f.cfg.rotation(len(p.have)))
	ft.pk.endGameLeft = f.cfg.Pipeline
	err = ft.run(ctx)
	ft.stats.FetchedBytes, ft.stats.WastedBytes = ft.fetched, ft.wasted
	ft.stats.Banned = f.Banned(id)
	if err != nil {
		return ft.stats, err
	}
	return ft.stats, p.complete()
}

// reserve makes room for the rest of model id under the size limit.
func (s *Store) reserve(id string) error {
	m, err := s.loadManifest(id)
	if err != nil {
		return err
	}
	var need int64
	for _, f := range m.Files {
		if _, err := os.Stat(s.blobPath(f.SHA256)); err == nil {
			continue
		}
		if _, err := os.Stat(s.partialPath(f.SHA256)); err == nil {
			continue // already counted in usage
		}
		need += f.Size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.makeRoomLocked(need, id)
}

// fetchManifest asks providers for the manifest until one gives bytes
// that hash to id.
func (f *Fetcher) fetchManifest(ctx context.Context, id string) error {
	provs, err := f.find.FindProviders(ctx, id, f.cfg.MaxPeers)
	if err != nil {
		return fmt.Errorf("weightcache: finding providers of %s: %w", id, err)
	}
	var errs []error
	for _, ai := range provs {
		if f.banned(id, ai.ID) {
			continue
		}
		b, err := f.askManifest(ctx, ai.ID, id)
		if err == nil {
			_, err = f.store.AddManifest(id, b)
			if err == nil {
				return nil
			}
			if errors.Is(err, ErrManifestMismatch) || errors.Is(err, ErrBadManifest) {
				f.ban(id, ai.ID)
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", ai.ID, err))
	}
	return fmt.Errorf("%w: manifest of %s: %w", ErrNoProviders, id, errors.Join(errs...))
}

func (f *Fetcher) askManifest(ctx context.Context, p peer.ID, id string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.StallTimeout)
	defer cancel()
	s, err := f.dial.OpenStream(ctx, p, Protocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if _, err := s.Write(encodeHello(hello{op: opManifest, id: id})); err != nil {
		return nil, err
	}
	_ = s.CloseWrite()
	r := bufio.NewReader(s)
	var hb [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, err
	}
	h, err := decodeFrameHeader(hb[:], -1, 0)
	if err != nil {
		return nil, err
	}
	b := make([]byte, h.b)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	if h.typ == frError {
		return nil, &remoteError{code: h.a, msg: string(b)}
	}
	return b, nil
}

// fetch is one Fetch call in progress.
type fetch struct {
	f        *Fetcher
	id       string
	p        *partial
	progress func(Progress)
	start    time.Time

	mu       sync.Mutex // guards everything below
	pk       *picker
	prog     Progress
	stats    FetchStats
	fetched  int64
	wasted   int64
	active   int
	running  map[peer.ID]bool
	attempts map[peer.ID]int // sessions opened per peer in this fetch
	wake     chan struct{}   // closed (and replaced) when the picker may have new work
}

// changedLocked wakes the sessions waiting for work; ft.mu is held.
func (ft *fetch) changedLocked() {
	close(ft.wake)
	ft.wake = make(chan struct{})
}

// maxAttempts bounds the sessions one fetch opens to one peer: a peer
// whose download ended may be serving more a moment later, but one that
// keeps stalling or failing is left alone.
const maxAttempts = 3

type peerDone struct {
	p   peer.ID
	err error
}

// run owns every goroutine of the fetch: the file finisher, the provider
// announcer, the provider lookups and one per peer; it waits for all.
func (ft *fetch) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	cfg := ft.f.cfg

	finished := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		finished <- ft.p.finish(ctx)
	}()
	if ft.f.ann != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ft.f.ann.Provide(ctx, ft.id); err != nil && ctx.Err() == nil {
				ft.f.log.Debug("announcing partial model failed", "id", ft.id, "err", err)
			}
		}()
	}

	done := make(chan peerDone)
	found := make(chan []peer.AddrInfo, 1)
	looking := false
	lookup := func() {
		if looking {
			return
		}
		looking = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, lcancel := context.WithTimeout(ctx, cfg.Refresh)
			defer lcancel()
			provs, err := ft.f.find.FindProviders(lctx, ft.id, cfg.MaxPeers*2)
			if err != nil {
				ft.f.log.Debug("finding providers failed", "id", ft.id, "err", err)
			}
			select {
			case found <- provs:
			case <-ctx.Done():
			}
		}()
	}
	lookup()
	// Look again soon, then less and less often up to Refresh: the other
	// fetchers of a model announce themselves as it starts, and the sooner
	// they are found the sooner they trade chunks instead of all queueing
	// at the first copy's uplink.
	every := min(cfg.Refresh, 250*time.Millisecond)
	tick := time.NewTimer(every)
	defer tick.Stop()

	startPeer := func(p peer.ID) bool {
		if ft.f.banned(ft.id, p) {
			return false
		}
		ft.mu.Lock()
		skip := ft.running[p] || ft.attempts[p] >= maxAttempts || ft.active >= cfg.MaxPeers || ft.pk.done()
		if !skip {
			if ft.attempts[p] == 0 {
				ft.stats.Peers++
			}
			ft.attempts[p]++
			ft.running[p] = true
			ft.active++
		}
		ft.mu.Unlock()
		if skip {
			return false
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := ft.runPeer(ctx, p)
			select {
			case done <- peerDone{p, err}:
			case <-ctx.Done():
			}
		}()
		return true
	}

	var lastErr error
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-finished:
			if err != nil {
				return err
			}
			return nil
		case provs := <-found:
			looking = false
			started := 0
			for _, ai := range provs {
				if startPeer(ai.ID) {
					started++
				}
			}
			if started == 0 && ft.idle() {
				return ft.noProviders(lastErr)
			}
		case p := <-ft.p.peers:
			// A member asked us for this model: it is fetching it too,
			// so it has (or soon has) chunks to trade.
			startPeer(p)
		case d := <-done:
			ft.mu.Lock()
			ft.active--
			delete(ft.running, d.p)
			// It may have been a peer some seed pointed us at.
			ft.pk.lapseDeclined(func(q peer.ID) bool { return q != d.p })
			ft.changedLocked()
			ft.mu.Unlock()
			if d.err != nil && ctx.Err() == nil {
				ft.f.log.Debug("peer dropped", "id", ft.id, "peer", d.p, "err", d.err)
				lastErr = fmt.Errorf("%s: %w", d.p, d.err)
				if errors.Is(d.err, ErrDiskFull) || errors.Is(d.err, errLocal) {
					return d.err
				}
			}
			if ft.idle() {
				lookup()
			}
		case <-tick.C:
			every = min(2*every, cfg.Refresh)
			tick.Reset(every)
			ft.mu.Lock()
			want := ft.active < cfg.MaxPeers && !ft.pk.done()
			// Pointers to peers we never reached (not let in, or out
			// of attempts) lapse here.
			ft.pk.lapseDeclined(func(q peer.ID) bool { return ft.running[q] })
			ft.changedLocked()
			ft.mu.Unlock()
			if want {
				lookup()
			}
		}
	}
}

// idle: no peer is working and chunks are still missing.
func (ft *fetch) idle() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.active == 0 && !ft.pk.done()
}

func (ft *fetch) noProviders(last error) error {
	if last != nil {
		return fmt.Errorf("%w: %s: last failure: %w", ErrNoProviders, ft.id, last)
	}
	return fmt.Errorf("%w: %s", ErrNoProviders, ft.id)
}

// session opens a chunk session with p: over a bulk connection when p
// offers one, else over a libp2p stream.
func (f *Fetcher) session(ctx context.Context, p peer.ID) (conn, error) {
	if c, err := f.dialBulk(ctx, p); err == nil {
		return c, nil
	}
	octx, cancel := context.WithTimeout(ctx, f.cfg.StallTimeout)
	defer cancel()
	s, err := f.dial.OpenStream(octx, p, Protocol)
	if err != nil {
		return nil, err
	}
	return streamConn{s}, nil
}

// errLocal wraps failures on this node's side (disk), which end the fetch.
var errLocal = errors.New("weightcache: local failure")

// errBadChunk: the peer sent a chunk that failed verification.
var errBadChunk = fmt.Errorf("%w: chunk failed verification", ErrHashMismatch)

// runPeer downloads from one provider until the model is done, the peer
// has nothing more to give, or it fails (bad chunk: banned; stall or
// protocol error: dropped).
func (ft *fetch) runPeer(ctx context.Context, p peer.ID) (err error) {
	cfg := ft.f.cfg
	s, err := ft.f.session(ctx, p)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	defer func() {
		if err != nil {
			_ = s.Reset()
		} else {
			_ = s.Close()
		}
	}()
	// The hello, then our have-map; from here on every chunk we gain is
	// announced to this server too (see the forwarder below).
	subs, ours := ft.p.subscribe()
	defer ft.p.unsubscribe(subs)
	hb := append(encodeHello(hello{op: opGet, id: ft.id}), opHaveMap)
	if _, err := s.Write(append(hb, ours...)); err != nil {
		return err
	}
	ft.mu.Lock()
	if ft.stats.Transports == nil {
		ft.stats.Transports = map[string]int{}
	}
	ft.stats.Transports[s.Transport()]++
	ft.mu.Unlock()
	l := ft.p.l
	n := len(l.chunks)
	r := bufio.NewReaderSize(s, 64<<10)
	readHeader := func(owed bool) (frameHeader, error) {
		if owed {
			_ = s.SetReadDeadline(time.Now().Add(cfg.StallTimeout))
		} else {
			_ = s.SetReadDeadline(time.Time{})
		}
		var hb [frameHeaderLen]byte
		if _, err := io.ReadFull(r, hb[:]); err != nil {
			return frameHeader{}, err
		}
		return decodeFrameHeader(hb[:], n, l.m.ChunkSize)
	}
	h, err := readHeader(true)
	if err != nil {
		return err
	}
	if h.typ == frError {
		b := make([]byte, h.b)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		return &remoteError{code: h.a, msg: string(b)}
	}
	if h.typ != frHaveMap {
		return fmt.Errorf("%w: expected have-map, got %q", ErrProtocol, h.typ)
	}
	bf := make([]byte, h.b)
	if _, err := io.ReadFull(r, bf); err != nil {
		return err
	}
	if _, err := decodeHaveMap(bf, n); err != nil {
		ft.f.ban(ft.id, p)
		return err
	}
	ft.mu.Lock()
	ft.pk.addPeer(p, bf)
	ft.prog.Peers++
	ft.mu.Unlock()
	defer func() {
		ft.mu.Lock()
		ft.pk.removePeer(p)
		ft.prog.Peers--
		ft.changedLocked()
		ft.mu.Unlock()
	}()

	// Writes to the stream: requests from the reader, haves from the
	// forwarder, a report of a bad chunk from the worker, each message
	// whole. After the report our side is closed and writes are dropped.
	var wmu sync.Mutex
	reported := false // under wmu
	var closedWrite atomic.Bool
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		if reported {
			return nil
		}
		_, err := s.Write(b)
		return err
	}
	// report tells the server chunk i failed our check, so it can check
	// its own copy, and closes our side: the server reads the report and
	// ends the session, and the reader, draining, sees it end. A server
	// that keeps the session open anyway is reset after reportGrace.
	report := func(i int) {
		wmu.Lock()
		defer wmu.Unlock()
		reported = true
		m := encodeClientMsg(opBad, uint32(i))
		if _, err := s.Write(m[:]); err != nil || s.CloseWrite() != nil {
			_ = s.Reset()
			return
		}
		closedWrite.Store(true)
		time.AfterFunc(reportGrace, func() { _ = s.Reset() })
	}

	// A worker verifies and stores each chunk while the reader takes the
	// next one off the stream: recvBuffers buffers pass between them.
	type recvd struct {
		asked, i  int
		data, buf []byte
	}
	bufs := newBufSlots(recvBuffers, l.m.ChunkSize)
	work := make(chan recvd, recvBuffers)
	werr := make(chan error, 1)
	var wwg sync.WaitGroup
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		failed := false
		for w := range work {
			if !failed {
				if err := ft.take(p, w.asked, w.i, w.data); err != nil {
					failed = true
					werr <- err
					if errors.Is(err, errBadChunk) {
						report(w.i)
					} else {
						_ = s.Reset() // the reader stops at its next read
					}
				}
			}
			bufs.give(w.buf)
		}
	}()
	defer func() {
		close(work)
		wwg.Wait()
		bufs.release()
		select {
		case e := <-werr:
			err = e
		default:
		}
	}()

	// The forwarder tells the server every chunk this fetch gains, from
	// any peer: a server holding the whole model hands out what no
	// fetcher holds yet (super-seeding). It ends with the session.
	fwdStop := make(chan struct{})
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		var msgs []byte
		for {
			select {
			case i, ok := <-subs:
				if !ok {
					return
				}
				msgs = msgs[:0]
				for more := true; more; {
					m := encodeClientMsg(opHave, uint32(i))
					msgs = append(msgs, m[:]...)
					select {
					case i, more = <-subs:
					default:
						more = false
					}
				}
				if write(msgs) != nil {
					return
				}
			case <-fwdStop:
				return
			}
		}
	}()
	defer func() {
		close(fwdStop)
		fwg.Wait()
	}()

	// Requested and not yet answered, oldest first: the server answers
	// in order, each with the chunk asked for ('D') or another ('S').
	var sent []int
	var reqBuf []byte
	// fill asks for more chunks up to the pipeline depth. It reports
	// whether this peer is finished with: nothing owed, nothing to ask for
	// and nothing it could still get (it holds every chunk) — or the model is done.
	var wake chan struct{}
	fill := func() (bool, error) {
		reqBuf = reqBuf[:0]
		ft.mu.Lock()
		wake = ft.wake
		for ft.pk.inFlight(p) < cfg.Pipeline {
			i, ok := ft.pk.next(p)
			if !ok {
				break
			}
			rq := encodeChunkRequest(uint32(i))
			reqBuf = append(reqBuf, rq[:]...)
			sent = append(sent, i)
		}
		owed := ft.pk.inFlight(p)
		pp := ft.pk.peers[p]
		finished := ft.pk.done() || owed == 0 && pp.nhas == n && !ft.pk.useful(p)
		ft.mu.Unlock()
		if len(reqBuf) > 0 {
			if err := write(reqBuf); err != nil {
				return false, err
			}
		}
		return finished, nil
	}
	for {
		if closedWrite.Load() {
			// We reported a bad chunk (the worker's error is returned):
			// read until the server ends the session.
			_ = s.SetReadDeadline(time.Now().Add(reportGrace))
			_, err := io.Copy(io.Discard, r)
			return err
		}
		fin, err := fill()
		if err != nil {
			return err
		}
		if fin {
			return nil
		}
		owed := len(sent) > 0
		ft.mu.Lock()
		seed := ft.pk.full(ft.pk.peers[p])
		ft.mu.Unlock()
		if !owed && seed {
			// A seed sends nothing unasked: wait until the picker may
			// have work for it (a chunk arrived, a peer left).
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		h, err := readHeader(owed)
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				ft.f.ban(ft.id, p)
			}
			return err
		}
		switch h.typ {
		case frHave:
			ft.mu.Lock()
			ft.pk.gotHave(p, int(h.a))
			ft.mu.Unlock()
		case frError:
			b := make([]byte, h.b)
			if _, err := io.ReadFull(r, b); err != nil {
				return err
			}
			return &remoteError{code: h.a, msg: string(b)}
		case frHint:
			b := make([]byte, h.b)
			if _, err := io.ReadFull(r, b); err != nil {
				return err
			}
			q, err := decodeHint(b)
			if err != nil || len(sent) == 0 || sent[0] != int(h.a) {
				ft.f.ban(ft.id, p)
				return fmt.Errorf("%w: peer hint for chunk %d: %v", ErrProtocol, h.a, err)
			}
			sent = sent[1:]
			ft.mu.Lock()
			once := ft.pk.declined(p, int(h.a), q)
			ft.changedLocked()
			ft.mu.Unlock()
			if !once {
				ft.f.ban(ft.id, p)
				return fmt.Errorf("%w: pointed elsewhere twice for chunk %d", ErrProtocol, h.a)
			}
			ft.p.offerPeer(q) // the fetch opens a session to it
		case frData, frSubst:
			i := int(h.a)
			if len(sent) == 0 || h.typ == frData && sent[0] != i {
				ft.f.ban(ft.id, p)
				return fmt.Errorf("%w: unrequested chunk %d", ErrProtocol, i)
			}
			asked := sent[0]
			sent = sent[1:]
			buf, _ := bufs.take(nil) // the worker always hands buffers back
			data := buf[:h.b]
			if _, err := io.ReadFull(r, data); err != nil {
				bufs.give(buf)
				return err
			}
			work <- recvd{asked, i, data, buf}
		default:
			return fmt.Errorf("%w: unexpected frame %q", ErrProtocol, h.typ)
		}
	}
}

// take verifies chunk i from p, sent for the request for asked (i itself
// or, from a super-seeding server, another), and stores it: a bad chunk
// bans p.
func (ft *fetch) take(p peer.ID, asked, i int, data []byte) error {
	wrote, werr := ft.p.write(i, data)
	bad := errors.Is(werr, errBadChunk)
	if bad {
		ft.f.ban(ft.id, p)
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.fetched += int64(len(data))
	// The partial is the judge of new versus duplicate: two peers may
	// deliver the same end-game chunk at once.
	ft.pk.answered(p, asked, i, werr == nil)
	ft.changedLocked()
	if !wrote {
		ft.wasted += int64(len(data))
	} else {
		ft.prog.DoneBytes += int64(len(data))
	}
	ft.prog.FetchedBytes = ft.fetched
	ft.prog.Elapsed = ft.f.cfg.Now().Sub(ft.start)
	if ft.progress != nil && !bad {
		ft.progress(ft.prog)
	}
	switch {
	case bad:
		return fmt.Errorf("%w: chunk %d", werr, i)
	case werr != nil:
		return fmt.Errorf("%w: %w", errLocal, werr)
	}
	return nil
}

// reportGrace bounds how long a session lasts after the fetcher reported
// a bad chunk: the server should end it on reading the report.
const reportGrace = 2 * time.Second

// recvBuffers is the most chunk buffers a peer session takes: one being
// read off the stream, one being verified and written.
const recvBuffers = 2

// transportOf names the transport under a stream: the last protocol of
// its connection's remote address before any /p2p part ("tcp", "quic-v1").
func transportOf(s network.Stream) string {
	name := "unknown"
	if c := s.Conn(); c != nil && c.RemoteMultiaddr() != nil {
		for _, p := range c.RemoteMultiaddr().Protocols() {
			switch p.Name {
			case "tcp", "quic-v1", "quic", "webtransport", "ws", "wss", "webrtc-direct", "p2p-circuit":
				name = p.Name
			}
		}
	}
	return name
}
