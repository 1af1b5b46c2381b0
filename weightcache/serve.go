package weightcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
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
// of ones still downloading) to other members over Protocol. Every chunk
// is re-checked against its hash before it is sent.
type Server struct {
	store *Store
	reg   Registrar
	log   *slog.Logger

	mu       sync.Mutex
	closed   bool
	sessions map[network.Stream]struct{}
	wg       sync.WaitGroup
	bufs     sync.Pool
}

// Serve starts serving st on reg. Close stops it and waits for the
// sessions in progress to end.
func Serve(st *Store, reg Registrar) *Server {
	srv := &Server{store: st, reg: reg, log: st.log, sessions: map[network.Stream]struct{}{}}
	reg.Handle(Protocol, srv.handle)
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
	srv.mu.Unlock()
	srv.wg.Wait()
	return nil
}

func (srv *Server) handle(s network.Stream) {
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
		srv.log.Debug("weight session ended", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

func (srv *Server) session(s network.Stream) error {
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

// serveChunks answers chunk requests in order and forwards new haves.
// A loader goroutine, owned here and waited for, decodes requests and
// reads and verifies each chunk while the one before it is being sent
// (two buffers between them), so disk, hashing and the network overlap.
func (srv *Server) serveChunks(s network.Stream, r *bufio.Reader, id string) error {
	p, err := srv.store.openReader(id)
	if err != nil {
		code := uint32(codeNotFound)
		return writeError(s, code, "model not held")
	}
	defer p.release()
	p.offerPeer(s.Conn().RemotePeer())
	subs, bf := p.subscribe()
	defer p.unsubscribe(subs)
	n := len(p.l.chunks)
	if err := writeFrame(s, frHaveMap, uint32(n), bf); err != nil {
		return err
	}

	type loaded struct {
		i    int
		data []byte
		buf  []byte
		err  error
	}
	ctx, cancel := context.WithCancel(context.Background())
	free := make(chan []byte, serveBuffers)
	for range serveBuffers {
		buf, _ := srv.bufs.Get().([]byte)
		if int64(cap(buf)) < p.l.m.ChunkSize {
			buf = make([]byte, p.l.m.ChunkSize)
		}
		free <- buf[:cap(buf)]
	}
	out := make(chan loaded, serveBuffers)
	var rerr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(out)
		var b [requestLen]byte
		for {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				rerr = err
				return
			}
			i, err := decodeChunkRequest(b[:], n)
			if err != nil {
				rerr = err
				return
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			data, err := p.read(i, buf)
			select {
			case out <- loaded{i, data, buf, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		_ = s.Reset() // no-op after a clean close; unblocks the loader otherwise
		wg.Wait()
		for ld := range out {
			free <- ld.buf
		}
		for len(free) > 0 {
			srv.bufs.Put(<-free) //nolint:staticcheck // a slice header is fine here
		}
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
				// Not held (a confused peer) or failed its hash on disk: refuse.
				if errors.Is(ld.err, ErrHashMismatch) {
					srv.log.Warn("stored chunk failed verification", "id", id, "chunk", ld.i)
				}
				free <- ld.buf
				_ = writeError(s, codeBad, ld.err.Error())
				return ld.err
			}
			err := writeFrame(s, frData, uint32(ld.i), ld.data)
			free <- ld.buf
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

// serveBuffers is the chunk buffers per session: one being sent, one
// being read and verified.
const serveBuffers = 2
