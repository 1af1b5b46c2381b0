// Command liar is a pool member built only by the end-to-end tests: it
// imports a model like any node, then serves it over the real weight
// protocol with one byte of every chunk flipped on the wire, after the
// store's own check. It stands for a member with a broken disk or bad
// intent, so the tests can prove that fetchers detect it and route around
// it. Nothing in the shoal binary can be told to lie; this program wraps
// the unchanged weightcache.Server in a stream that corrupts what it
// writes.
//
//	liar -token TOKEN -dir DIR -model SRC
//
// It prints "PEER_ID MODEL_ID" on stdout once it serves, and runs until
// killed.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/weightcache"
)

func main() {
	token := flag.String("token", "", "join token")
	dir := flag.String("dir", "", "store directory")
	src := flag.String("model", "", "model directory to import and serve corrupted")
	flag.Parse()
	if err := run(*token, *dir, *src); err != nil {
		fmt.Fprintln(os.Stderr, "liar:", err)
		os.Exit(1)
	}
}

func run(token, dir, src string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := mesh.ParseToken(token)
	if err != nil {
		return err
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := mesh.New(ctx, mesh.Config{
		Key:         key,
		Pool:        pool,
		ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")},
		Name:        "liar",
		Fingerprint: []byte(dir),
		Logger:      log,
	})
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Join(ctx); err != nil {
		return err
	}
	st, err := weightcache.Open(weightcache.Config{Dir: dir})
	if err != nil {
		return err
	}
	id, err := st.Add(ctx, src, "")
	if err != nil {
		return err
	}
	srv := weightcache.Serve(st, corrupting{m})
	defer srv.Close()
	if err := m.Provide(ctx, id); err != nil {
		return err
	}
	m.SetModels([]mesh.ModelRef{{ID: id}})
	fmt.Printf("%s %s\n", m.ID(), id)
	<-ctx.Done()
	return nil
}

// corrupting registers handlers whose streams flip a byte of every chunk.
type corrupting struct{ *mesh.Node }

func (c corrupting) Handle(pid protocol.ID, h network.StreamHandler) {
	c.Node.Handle(pid, func(s network.Stream) { h(&lyingStream{Stream: s}) })
}

// lyingStream follows the server's frames (9-byte header: type, a, b as
// big-endian uint32, then b bytes) and flips the first payload byte of
// each 'D' or 'S' (chunk) frame.
type lyingStream struct {
	network.Stream
	hdr     []byte // header bytes seen of the current frame
	left    uint32 // payload bytes left in the current frame
	isChunk bool
	flipped bool
}

func (s *lyingStream) Write(p []byte) (int, error) {
	out := append([]byte(nil), p...)
	for i := 0; i < len(out); {
		if s.left == 0 {
			s.hdr = append(s.hdr, out[i])
			i++
			if len(s.hdr) == 9 {
				s.isChunk = s.hdr[0] == 'D' || s.hdr[0] == 'S'
				s.left = binary.BigEndian.Uint32(s.hdr[5:9])
				s.flipped = false
				s.hdr = s.hdr[:0]
			}
			continue
		}
		n := min(uint32(len(out)-i), s.left)
		if s.isChunk && !s.flipped {
			out[i] ^= 0xff
			s.flipped = true
		}
		i += int(n)
		s.left -= n
	}
	if _, err := s.Stream.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
