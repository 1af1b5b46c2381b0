package weightcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Registrar serves a protocol to pool members; *mesh.Node satisfies it.
type Registrar interface {
	Handle(pid protocol.ID, h network.StreamHandler)
	RemoveHandler(pid protocol.ID)
}

// helloTimeout bounds how long a stream may take to say what it wants.
const helloTimeout = 10 * time.Second

// Server serves a store's models (complete ones, and the verified chunks
// of ones still downloading) to other members over Protocol. Chunks were
// verified when they were stored and are sent without hashing them again:
// the fetcher checks each one, and a chunk it reports bad is checked here
// (see checkReported).
type Server struct {
	store *Store
	reg   Registrar
	log   *slog.Logger

	mu       sync.Mutex
	closed   bool
	sessions map[conn]struct{}
	seeding  map[string]*seeding // per model served whole: see seeding
	bulk     *bulkListener       // nil until ListenBulk
	wg       sync.WaitGroup

	mappedSent atomic.Int64 // chunks sent from a file mapping (see view)
}

// Serve starts serving st on reg. Close stops it and waits for the
// sessions in progress to end.
func Serve(st *Store, reg Registrar) *Server {
	srv := &Server{store: st, reg: reg, log: st.log, sessions: map[conn]struct{}{}, seeding: map[string]*seeding{}}
	reg.Handle(Protocol, func(s network.Stream) { srv.handle(streamConn{s}) })
	return srv
}

// Close stops serving: new streams are refused, open ones reset, and it
// returns once their handlers have ended.
func (srv *Server) Close() error {
	srv.reg.RemoveHandler(Protocol)
	srv.mu.Lock()
	srv.closed = true
	for s := range srv.sessions {
		_ = s.Reset()
	}
	bl := srv.bulk
	srv.mu.Unlock()
	if bl != nil {
		srv.reg.RemoveHandler(BulkProtocol)
		bl.close()
	}
	srv.wg.Wait()
	return nil
}

func (srv *Server) handle(s conn) {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		_ = s.Reset()
		return
	}
	srv.sessions[s] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.sessions, s)
		srv.mu.Unlock()
		srv.wg.Done()
	}()
	if err := srv.session(s); err != nil && !errors.Is(err, io.EOF) {
		srv.log.Debug("weight session ended", "peer", s.RemotePeer(), "transport", s.Transport(), "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

func (srv *Server) session(s conn) error {
	_ = s.SetReadDeadline(time.Now().Add(helloTimeout))
	r := bufio.NewReader(s)
	h, err := readHello(r)
	if err != nil {
		return err
	}
	_ = s.SetReadDeadline(time.Time{})
	switch h.op {
	case opManifest:
		b, err := srv.store.ManifestBytes(h.id)
		if err != nil {
			return writeError(s, codeNotFound, "no manifest")
		}
		return writeFrame(s, frManifest, 0, b)
	default:
		return srv.serveChunks(s, r, h.id)
	}
}

// serveChunks reads the fetcher's have-map, then answers chunk requests
// in order and forwards new haves. A loader goroutine, owned here and
// waited for, decodes the fetcher's messages and reads each chunk while
// the one before it is being sent (two buffers between them), so disk and
// the network overlap. A model held whole is served
// super-seeding (see seeding): the loader may load another chunk than the
// one asked for.
func (srv *Server) serveChunks(s conn, r *bufio.Reader, id string) error {
	p, err := srv.store.openReader(id)
	if err != nil {
		code := uint32(codeNotFound)
		return writeError(s, code, "model not held")
	}
	defer p.release()
	n := len(p.l.chunks)
	_ = s.SetReadDeadline(time.Now().Add(helloTimeout))
	theirs, err := readHaveMap(r, n)
	if err != nil {
		return err
	}
	_ = s.SetReadDeadline(time.Time{})
	p.offerPeer(s.RemotePeer())
	subs, bf := p.subscribe()
	defer p.unsubscribe(subs)
	sd, ss := srv.joinSeeding(id, p, s.RemotePeer(), theirs)
	if sd != nil {
		defer srv.leaveSeeding(id, sd, ss)
	}
	if err := writeFrame(s, frHaveMap, uint32(n), bf); err != nil {
		return err
	}

	type loaded struct {
		i, asked int
		data     []byte
		mapped   bool    // data is in the file's mapping
		buf      []byte  // nil when data is mapped or a hint
		hint     peer.ID // no chunk: ask this fetcher for it
		err      error
	}
	// Over a bulk connection, chunks are sent straight from the file's
	// mapping (TLS encrypts in this
	// goroutine, and a fault reading the mapping becomes an error there);
	// a libp2p stream may read the payload on another goroutine, so its
	// chunks always go through a buffer.
	_, zeroCopy := s.(*bulkConn)
	ctx, cancel := context.WithCancel(context.Background())
	bufs := newBufSlots(serveBuffers, p.l.m.ChunkSize)
	out := make(chan loaded, serveBuffers)
	var rerr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(out)
		var b [requestLen]byte
		var queue []int // requests read, not loaded yet
		readMsg := func() error {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return err
			}
			m, err := decodeClientMsg(b[:], n)
			if err != nil {
				return err
			}
			switch m.typ {
			case opBad:
				return srv.checkReported(p, s.RemotePeer(), m.i)
			case opRequest:
				queue = append(queue, m.i)
			}
			srv.noteMsg(sd, ss, m)
			return nil
		}
		for {
			for len(queue) == 0 {
				if rerr = readMsg(); rerr != nil {
					return
				}
			}
			// Take in every message already here before picking, so
			// the haves sent with a request count in its answer.
			for r.Buffered() >= requestLen {
				if rerr = readMsg(); rerr != nil {
					return
				}
			}
			asked := queue[0]
			queue = queue[1:]
			ld := loaded{asked: asked}
			ld.i, ld.hint = srv.pick(sd, ss, asked)
			if ld.hint == "" && zeroCopy {
				ld.data = p.view(ld.i)
				ld.mapped = ld.data != nil
			}
			if ld.hint == "" && !ld.mapped {
				var ok bool
				if ld.buf, ok = bufs.take(ctx.Done()); !ok {
					return
				}
				ld.data, ld.err = p.read(ld.i, ld.buf)
			}
			select {
			case out <- ld:
			case <-ctx.Done():
				if ld.buf != nil {
					bufs.give(ld.buf)
				}
				return
			}
			if ld.err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		_ = s.Reset() // no-op after a clean close; unblocks the loader otherwise
		wg.Wait()
		for ld := range out {
			if ld.buf != nil {
				bufs.give(ld.buf)
			}
		}
		bufs.release()
	}()

	for {
		select {
		case ld, ok := <-out:
			if !ok {
				wg.Wait()
				if errors.Is(rerr, io.EOF) {
					_ = s.CloseWrite()
					return io.EOF
				}
				return rerr
			}
			if ld.err != nil {
				// Not held (a confused peer) or unreadable: refuse.
				bufs.give(ld.buf)
				_ = writeError(s, codeBad, ld.err.Error())
				return ld.err
			}
			typ, payload := byte(frData), ld.data
			switch {
			case ld.hint != "":
				typ, payload = frHint, []byte(ld.hint)
			case ld.i != ld.asked:
				typ = frSubst
			}
			var err error
			if ld.mapped {
				err = writeFrameMapped(s, typ, uint32(ld.i), payload)
				srv.mappedSent.Add(1)
			} else {
				err = writeFrame(s, typ, uint32(ld.i), payload)
			}
			if ld.buf != nil {
				bufs.give(ld.buf)
			}
			if err != nil {
				return err
			}
		case i, ok := <-subs:
			if !ok {
				// The download this session served from ended; the
				// fetcher reconnects to whatever serves the model now.
				return fmt.Errorf("weightcache: download of %s ended", id)
			}
			if err := writeFrame(s, frHave, uint32(i), nil); err != nil {
				return err
			}
		}
	}
}

// checkReported checks chunk i of p on disk after the fetcher who reported
// it bad. A chunk that fails there is damage to this store (see damaged);
// one that passes means the fetcher is wrong or lying. Either way the
// session ends: the report is the fetcher's last message.
func (srv *Server) checkReported(p *partial, who peer.ID, i int) error {
	if !p.has(i) {
		return fmt.Errorf("%w: chunk %d reported bad; it was not sent", ErrProtocol, i)
	}
	data, err := p.read(i, make([]byte, p.l.chunks[i].n))
	if err == nil && p.l.verifyChunk(i, data) {
		srv.log.Warn("a member reported a chunk bad that verifies here", "peer", who, "id", p.id, "chunk", i)
		return fmt.Errorf("%w: chunk %d reported bad; it verifies", ErrProtocol, i)
	}
	if err == nil {
		err = fmt.Errorf("%w: stored chunk %d of %s", ErrHashMismatch, i, p.id)
	}
	srv.log.Error("a stored chunk a member reported bad fails verification here; the model is marked partial, to be fetched again", "peer", who, "id", p.id, "chunk", i, "err", err)
	p.damaged(i, err)
	return err
}

// readHaveMap reads a fetcher's have-map message ('B', then (n+7)/8 bytes).
func readHaveMap(r io.Reader, n int) ([]bool, error) {
	b := make([]byte, 1+(n+7)/8)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	if b[0] != opHaveMap {
		return nil, fmt.Errorf("%w: expected the fetcher's have-map, got %q", ErrProtocol, b[0])
	}
	return decodeHaveMap(b[1:], n)
}

// joinSeeding enters a session into the seeding state of model id when p
// holds every chunk; otherwise (a download in progress) chunks are served
// as asked and it returns nils.
func (srv *Server) joinSeeding(id string, p *partial, who peer.ID, theirs []bool) (*seeding, *seedSession) {
	if !p.whole() {
		return nil, nil
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	sd := srv.seeding[id]
	if sd == nil || len(sd.held) != len(theirs) {
		sd = newSeeding(len(theirs))
		srv.seeding[id] = sd
	}
	return sd, sd.join(string(who), theirs)
}

func (srv *Server) leaveSeeding(id string, sd *seeding, ss *seedSession) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	sd.leave(ss)
	if len(sd.sessions) == 0 && srv.seeding[id] == sd {
		delete(srv.seeding, id)
	}
}

// noteMsg feeds a fetcher's message to the seeding state, if any.
func (srv *Server) noteMsg(sd *seeding, ss *seedSession, m clientMsg) {
	if sd == nil {
		return
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if m.typ == opHave {
		sd.gotHave(ss, m.i)
	} else {
		sd.request(ss, m.i)
	}
}

// pick answers a request for chunk asked: the chunk to send, or a
// fellow fetcher to point at instead.
func (srv *Server) pick(sd *seeding, ss *seedSession, asked int) (int, peer.ID) {
	if sd == nil {
		return asked, ""
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	i, hint := sd.pick(ss, asked)
	if hint != nil {
		return i, peer.ID(hint.peer)
	}
	return i, ""
}

// serveBuffers is the most chunk buffers a session takes: one being sent,
// one being read.
const serveBuffers = 2

// writeFrameMapped is writeFrame for a payload in a file mapping (see
// readMapped).
func writeFrameMapped(w io.Writer, typ byte, a uint32, payload []byte) error {
	return readMapped(fmt.Sprintf("sending chunk %d", a), func() error { return writeFrame(w, typ, a, payload) })
}
