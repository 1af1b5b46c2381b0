package weightcache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// serveBulk serves s on n with bulk connections on loopback and counts
// their bytes in out.
func serveBulk(t *testing.T, s *Store, n *mesh.Node, out *atomic.Int64) *Server {
	t.Helper()
	srv := Serve(s, n)
	t.Cleanup(func() { _ = srv.Close() })
	tr := Traffic{}
	if out != nil {
		tr.Out = func(k int) { out.Add(int64(k)) }
	}
	if _, err := srv.ListenBulk("127.0.0.1:0", tr); err != nil {
		t.Fatal(err)
	}
	return srv
}

func TestBulkSwarm(t *testing.T) {
	nodes := meshtest.Pool(t, 4, meshtest.Fast)
	src := newStore(t, 0)
	data := randBytes(7, 3<<20+999)
	id := addBytes(t, src, data)
	var seederOut atomic.Int64
	serveBulk(t, src, nodes[0], &seederOut)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := nodes[0].Provide(ctx, id); err != nil {
		t.Fatal(err)
	}
	var in atomic.Int64
	var servers []*Server
	stats := fetchEverywhere(t, nodes[1:], id, data, func(s *Store, n *mesh.Node) { servers = append(servers, serveBulk(t, s, n, nil)) }, FetchConfig{
		Refresh: 200 * time.Millisecond,
		Traffic: Traffic{In: func(k int) { in.Add(int64(k)) }},
	})
	for i := range stats {
		for tr := range stats[i].Transports {
			if tr != "bulk" {
				t.Errorf("fetcher %d: sessions by transport %v, want bulk only", i, stats[i].Transports)
			}
		}
	}
	if got := seederOut.Load(); got < int64(len(data)) {
		t.Errorf("seeder counted %d bytes out on bulk connections, want at least the model's %d", got, len(data))
	}
	if got := in.Load(); got < 3*int64(len(data)) {
		t.Errorf("fetchers counted %d bytes in, want at least 3 x %d", got, len(data))
	}
	// The fetchers passed chunks they had verified themselves to each
	// other straight from their files' mappings.
	var mapped int64
	for _, srv := range servers {
		mapped += srv.mappedSent.Load()
	}
	if mapped == 0 {
		t.Errorf("no fetcher sent a chunk from a file mapping")
	}
}

// A server whose bulk port cannot be reached is fetched from over a libp2p
// stream, and not asked for a bulk connection again for a while.
func TestBulkUnreachableFallsBackToStreams(t *testing.T) {
	nodes := meshtest.Pool(t, 2, meshtest.Fast)
	src := newStore(t, 0)
	data := randBytes(8, 1<<20+5)
	id := addBytes(t, src, data)
	srv := serveBulk(t, src, nodes[0], nil)
	srv.mu.Lock()
	_ = srv.bulk.ln.Close() // offers go on; dials are refused
	srv.mu.Unlock()
	dst := newStore(t, 0)
	f := fetcher(t, dst, nodes[1], &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}, FetchConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := f.Fetch(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkModel(t, dst, id, data)
	if st.Transports["bulk"] != 0 || st.Transports["tcp"]+st.Transports["quic-v1"] == 0 {
		t.Errorf("sessions by transport %v, want libp2p streams only", st.Transports)
	}
	f.mu.Lock()
	until := f.noBulk[nodes[0].ID()]
	f.mu.Unlock()
	if time.Until(until) < bulkRetryAfter/2 {
		t.Errorf("peer not remembered as without bulk connections (until %v)", until)
	}
}

// A bulk connection needs the token offered over the mesh, once, and the
// certificate the offer names.
func TestBulkAdmission(t *testing.T) {
	nodes := meshtest.Pool(t, 2, meshtest.Fast)
	srv := serveBulk(t, newStore(t, 0), nodes[0], nil)
	addr := srv.bulk.ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	offer := func() bulkOffer {
		s, err := nodes[1].OpenStream(ctx, nodes[0].ID(), BulkProtocol)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		b, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeBulkOffer(b)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	// closedBySever: the server drops the connection instead of a session.
	closedByServer := func(c *bulkConn) bool {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write(encodeHello(hello{op: opManifest, id: IDOf([]byte("x"))}))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Reset()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("server neither answered nor closed within 5 s")
		}
		return err != nil
	}

	o := offer()
	c, err := openBulk(ctx, addr, o)
	if err != nil {
		t.Fatalf("with the offered token: %v", err)
	}
	if closedByServer(c) {
		t.Error("the offered token was refused")
	}
	c, err = openBulk(ctx, addr, o)
	if err == nil && !closedByServer(c) {
		t.Error("a token was accepted twice")
	}
	forged := offer()
	_, _ = rand.Read(forged.token[:])
	c, err = openBulk(ctx, addr, forged)
	if err == nil && !closedByServer(c) {
		t.Error("a token never offered was accepted")
	}
	wrongCert := offer()
	wrongCert.sum = sha256.Sum256([]byte("another certificate"))
	if _, err := openBulk(ctx, addr, wrongCert); err == nil {
		t.Error("a certificate other than the offered one was accepted")
	}
}

// Records written while batching reach the peer whole and in order, with
// writes from outside a batch (as TLS makes from its read side) between.
func TestBatchConnKeepsOrder(t *testing.T) {
	a, b := net.Pipe()
	bc := newBatchConn(a)
	var want bytes.Buffer
	done := make(chan []byte)
	go func() {
		got, _ := io.ReadAll(b)
		done <- got
	}()
	for i := range 50 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*7919%(bulkWriteBatch+100))
		bc.batch(i%3 != 0)
		if _, err := bc.Write(p); err != nil {
			t.Fatal(err)
		}
		want.Write(p)
		if i%5 == 0 {
			if err := bc.flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	bc.batch(false)
	if err := bc.flush(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if got := <-done; !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("peer read %d bytes, want %d in order", len(got), want.Len())
	}
}

func FuzzDecodeBulkOffer(f *testing.F) {
	b := bulkOffer{port: 4243}.encode()
	f.Add(b[:])
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeBulkOffer(b)
		if err != nil {
			return
		}
		if enc := o.encode(); !bytes.Equal(enc[:], b) || o.port == 0 {
			t.Fatalf("offer %x decodes to %+v", b, o)
		}
	})
}

// addBytes imports data as a one-file model into s and returns its ID.
func addBytes(t *testing.T, s *Store, data []byte) string {
	t.Helper()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "model.safetensors"), data)
	id, err := s.Add(context.Background(), src, "")
	if err != nil {
		t.Fatal(err)
	}
	return id
}
