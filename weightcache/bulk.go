package weightcache

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
)

// Chunks can travel over a bulk connection instead of a libp2p stream.
//
// Measured with two daemons on loopback, a 1 GiB pull over a libp2p stream
// (TLS, then yamux) costs both ends about 7.3 CPU-seconds: the seeder
// writes each 16 KiB TLS record with its own system call under yamux's
// frames, and the fetcher copies every frame through yamux's buffers. A
// bulk connection is one TLS 1.3 connection per session straight over TCP,
// with the records of one write gathered into a few large system calls.
//
// It is set up over the mesh, so it is as private as the mesh: the
// fetcher asks over BulkProtocol (a member-only libp2p stream, so both
// sides are authenticated members) and the server answers with its bulk
// port, the SHA-256 of its TLS certificate and a one-use token. The
// fetcher dials the port, accepts only that certificate, and sends the
// token first; the server admits the connection as that member's. The
// session on it is the ordinary Protocol session.
//
// Whenever this fails (a peer of an older version, a relayed connection,
// a firewalled port), the fetch falls back to a libp2p stream and does
// not try that peer's bulk port again for bulkRetryAfter.

// BulkProtocol is the libp2p protocol a fetcher asks a server for a bulk
// connection on.
const BulkProtocol protocol.ID = "/shoal/weights-bulk/1.0.0"

const (
	bulkOfferVersion = 1
	bulkTokenLen     = 32
	// bulkOfferLen: version, port (uint16), certificate SHA-256, token.
	bulkOfferLen = 1 + 2 + sha256.Size + bulkTokenLen
	// bulkTokenTTL is how long an offered token stays valid.
	bulkTokenTTL = 10 * time.Second
	// bulkDialTimeout bounds the TCP dial and TLS handshake.
	bulkDialTimeout = 2 * time.Second
	// bulkRetryAfter is how long a peer whose bulk port failed is reached
	// over libp2p streams only.
	bulkRetryAfter = time.Minute
	// bulkWriteBatch is how many bytes of TLS records gather before a
	// system call.
	bulkWriteBatch = 512 << 10
	// bulkReadBuffer is the buffer raw reads fill under TLS.
	bulkReadBuffer = 512 << 10
)

// Traffic counts the bytes moved over bulk connections (libp2p streams are
// counted by whoever supplies them). Nil funcs count nothing.
type Traffic struct {
	In, Out func(n int)
}

func (t Traffic) in(n int) {
	if t.In != nil && n > 0 {
		t.In(n)
	}
}

func (t Traffic) out(n int) {
	if t.Out != nil && n > 0 {
		t.Out(n)
	}
}

// conn is what a weight session runs over: a libp2p stream or a bulk
// connection.
type conn interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	// CloseWrite ends this side's writing; reading goes on.
	CloseWrite() error
	// Close ends the session cleanly, Reset abruptly.
	Close() error
	Reset() error
	RemotePeer() peer.ID
	// Transport names what carries it: "bulk", or the transport under a
	// stream ("tcp", "quic-v1", ...).
	Transport() string
}

// streamConn is a session over a libp2p stream.
type streamConn struct{ network.Stream }

func (s streamConn) RemotePeer() peer.ID { return s.Conn().RemotePeer() }
func (s streamConn) Transport() string   { return transportOf(s.Stream) }

// bulkConn is a session over a bulk connection: TLS over batchConn.
type bulkConn struct {
	tc   *tls.Conn
	raw  *batchConn
	peer peer.ID
	tr   Traffic
	wmu  sync.Mutex
}

func (c *bulkConn) Read(p []byte) (int, error) {
	n, err := c.tc.Read(p)
	c.tr.in(n)
	return n, err
}

// Write sends p as TLS records gathered into few system calls.
func (c *bulkConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.raw.batch(true)
	n, err := c.tc.Write(p)
	c.raw.batch(false)
	if ferr := c.raw.flush(); err == nil {
		err = ferr
	}
	c.tr.out(n)
	return n, err
}

func (c *bulkConn) SetReadDeadline(t time.Time) error { return c.tc.SetReadDeadline(t) }
func (c *bulkConn) RemotePeer() peer.ID               { return c.peer }
func (c *bulkConn) Transport() string                 { return "bulk" }

func (c *bulkConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.tc.CloseWrite()
	if tcp, ok := c.raw.Conn.(*net.TCPConn); ok {
		err = errors.Join(err, tcp.CloseWrite())
	}
	return err
}

func (c *bulkConn) Close() error { return c.tc.Close() }

// Reset drops the connection at once (an RST where the kernel allows).
func (c *bulkConn) Reset() error {
	if tcp, ok := c.raw.Conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	return c.raw.Conn.Close()
}

// batchConn sits under TLS. While batching, the records TLS writes gather
// in a buffer sent when full or at flush; otherwise a write goes out at
// once after anything gathered. Reads go through a large buffer, so one
// system call takes in many records. TLS may write from its read side (a
// key update), so every write takes the lock.
type batchConn struct {
	net.Conn
	r        *bufio.Reader
	mu       sync.Mutex
	batching atomic.Bool
	buf      []byte
}

func newBatchConn(c net.Conn) *batchConn {
	return &batchConn{Conn: c, r: bufio.NewReaderSize(c, bulkReadBuffer), buf: make([]byte, 0, bulkWriteBatch)}
}

func (c *batchConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *batchConn) batch(on bool) { c.batching.Store(on) }

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching.Load() && len(p) <= cap(c.buf) {
		if len(c.buf)+len(p) > cap(c.buf) {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// bulkListener is a server's side of bulk connections: the TCP listener,
// its certificate and the tokens offered and not yet used.
type bulkListener struct {
	ln   net.Listener
	cert tls.Certificate
	sum  [sha256.Size]byte // SHA-256 of cert's DER
	tr   Traffic

	mu        sync.Mutex
	pending   map[[bulkTokenLen]byte]bulkPending
	admitting map[net.Conn]struct{} // accepted, handshake or token not done
}

type bulkPending struct {
	peer    peer.ID
	expires time.Time
}

// ListenBulk serves bulk connections on addr ("host:port"; port 0 picks
// one) and offers them over BulkProtocol. Bytes moved on them are counted
// in tr. It returns the address listened on.
func (srv *Server) ListenBulk(addr string, tr Traffic) (net.Addr, error) {
	cert, sum, err := selfSignedCert()
	if err != nil {
		return nil, fmt.Errorf("weightcache: bulk certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("weightcache: bulk listener: %w", err)
	}
	bl := &bulkListener{ln: ln, cert: cert, sum: sum, tr: tr, pending: map[[bulkTokenLen]byte]bulkPending{}, admitting: map[net.Conn]struct{}{}}
	srv.mu.Lock()
	if srv.closed || srv.bulk != nil {
		srv.mu.Unlock()
		ln.Close()
		return nil, fmt.Errorf("%w: server closed or already listening for bulk connections", ErrConfig)
	}
	srv.bulk = bl
	srv.wg.Add(1)
	srv.mu.Unlock()
	srv.reg.Handle(BulkProtocol, srv.offerBulk)
	go func() {
		defer srv.wg.Done()
		srv.acceptBulk(bl)
	}()
	return ln.Addr(), nil
}

// offerBulk answers a member's BulkProtocol stream with the port, the
// certificate's hash and a fresh token bound to that member.
func (srv *Server) offerBulk(s network.Stream) {
	defer s.Close()
	srv.mu.Lock()
	bl := srv.bulk
	closed := srv.closed
	srv.mu.Unlock()
	if bl == nil || closed {
		_ = s.Reset()
		return
	}
	var tok [bulkTokenLen]byte
	if _, err := rand.Read(tok[:]); err != nil {
		_ = s.Reset()
		return
	}
	now := time.Now()
	bl.mu.Lock()
	for t, p := range bl.pending {
		if now.After(p.expires) {
			delete(bl.pending, t)
		}
	}
	bl.pending[tok] = bulkPending{peer: s.Conn().RemotePeer(), expires: now.Add(bulkTokenTTL)}
	bl.mu.Unlock()
	b := bulkOffer{port: uint16(bl.ln.Addr().(*net.TCPAddr).Port), sum: bl.sum, token: tok}.encode()
	_ = s.SetWriteDeadline(now.Add(helloTimeout))
	if _, err := s.Write(b[:]); err != nil {
		_ = s.Reset()
	}
}

// acceptBulk admits bulk connections until the listener closes.
func (srv *Server) acceptBulk(bl *bulkListener) {
	for {
		c, err := bl.ln.Accept()
		if err != nil {
			return
		}
		srv.mu.Lock()
		if srv.closed {
			srv.mu.Unlock()
			c.Close()
			return
		}
		srv.wg.Add(1)
		srv.mu.Unlock()
		go func() {
			defer srv.wg.Done()
			bc, err := bl.admit(c)
			if err != nil {
				srv.log.Debug("bulk connection refused", "remote", c.RemoteAddr(), "err", err)
				c.Close()
				return
			}
			srv.handle(bc)
		}()
	}
}

// admit runs the TLS handshake and takes the token; the connection is the
// session of the member the token was offered to.
func (bl *bulkListener) admit(c net.Conn) (*bulkConn, error) {
	bl.mu.Lock()
	bl.admitting[c] = struct{}{}
	bl.mu.Unlock()
	defer func() {
		bl.mu.Lock()
		delete(bl.admitting, c)
		bl.mu.Unlock()
	}()
	_ = c.SetDeadline(time.Now().Add(helloTimeout))
	bc := newBatchConn(c)
	tc := tls.Server(bc, &tls.Config{Certificates: []tls.Certificate{bl.cert}, MinVersion: tls.VersionTLS13})
	var tok [bulkTokenLen]byte
	if _, err := io.ReadFull(tc, tok[:]); err != nil {
		return nil, err
	}
	bl.mu.Lock()
	var p bulkPending
	var found bool
	for t, pp := range bl.pending {
		if subtle.ConstantTimeCompare(t[:], tok[:]) == 1 {
			p, found = pp, true
			delete(bl.pending, t)
			break
		}
	}
	bl.mu.Unlock()
	if !found || time.Now().After(p.expires) {
		return nil, errors.New("unknown or expired token")
	}
	_ = c.SetDeadline(time.Time{})
	return &bulkConn{tc: tc, raw: bc, peer: p.peer, tr: bl.tr}, nil
}

// dialBulk asks p for a bulk connection and opens it. An error means the
// session should use a libp2p stream; p is then not asked again for
// bulkRetryAfter.
func (f *Fetcher) dialBulk(ctx context.Context, p peer.ID) (_ conn, err error) {
	f.mu.Lock()
	until := f.noBulk[p]
	f.mu.Unlock()
	if time.Now().Before(until) {
		return nil, errors.New("bulk connections to this peer failed recently")
	}
	defer func() {
		if err != nil {
			f.mu.Lock()
			f.noBulk[p] = time.Now().Add(bulkRetryAfter)
			f.mu.Unlock()
			f.log.Debug("no bulk connection; using a libp2p stream", "peer", p, "err", err)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, bulkDialTimeout)
	defer cancel()
	s, err := f.dial.OpenStream(ctx, p, BulkProtocol)
	if err != nil {
		return nil, err
	}
	ip, ok := directIP(s.Conn().RemoteMultiaddr())
	if !ok {
		_ = s.Reset()
		return nil, errors.New("no direct address (relayed connection)")
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	var b [bulkOfferLen]byte
	_, err = io.ReadFull(s, b[:])
	stop()
	_ = s.Close()
	if err != nil {
		return nil, fmt.Errorf("bulk offer: %w", err)
	}
	o, err := decodeBulkOffer(b[:])
	if err != nil {
		return nil, err
	}
	bc, err := openBulk(ctx, net.JoinHostPort(ip, strconv.Itoa(int(o.port))), o)
	if err != nil {
		return nil, err
	}
	bc.peer, bc.tr = p, f.cfg.Traffic
	return bc, nil
}

// openBulk dials addr, accepts only the certificate the offer names and
// presents its token.
func openBulk(ctx context.Context, addr string, o bulkOffer) (*bulkConn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	bc := newBatchConn(c)
	tc := tls.Client(bc, &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: "shoal-weights",
		// The certificate is self-signed; what vouches for it is its hash,
		// received from the member over the mesh.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || sha256.Sum256(cs.PeerCertificates[0].Raw) != o.sum {
				return errors.New("bulk certificate does not match the offer")
			}
			return nil
		},
	})
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := tc.Write(o.token[:]); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return &bulkConn{tc: tc, raw: bc}, nil
}

// bulkOffer is a server's answer on BulkProtocol.
type bulkOffer struct {
	port  uint16
	sum   [sha256.Size]byte // SHA-256 of the server's certificate (DER)
	token [bulkTokenLen]byte
}

func (o bulkOffer) encode() [bulkOfferLen]byte {
	var b [bulkOfferLen]byte
	b[0] = bulkOfferVersion
	binary.BigEndian.PutUint16(b[1:3], o.port)
	copy(b[3:], o.sum[:])
	copy(b[3+sha256.Size:], o.token[:])
	return b
}

func decodeBulkOffer(b []byte) (bulkOffer, error) {
	var o bulkOffer
	if len(b) != bulkOfferLen {
		return o, fmt.Errorf("%w: bulk offer of %d bytes", ErrProtocol, len(b))
	}
	if b[0] != bulkOfferVersion {
		return o, fmt.Errorf("%w: bulk offer version %d", ErrProtocol, b[0])
	}
	o.port = binary.BigEndian.Uint16(b[1:3])
	if o.port == 0 {
		return o, fmt.Errorf("%w: bulk offer of port 0", ErrProtocol)
	}
	copy(o.sum[:], b[3:])
	copy(o.token[:], b[3+sha256.Size:])
	return o, nil
}

// directIP is the IP of a connection's remote address when it is reached
// directly (not through a relay).
func directIP(a multiaddr.Multiaddr) (string, bool) {
	if a == nil {
		return "", false
	}
	var ip string
	for _, c := range a {
		switch c.Protocol().Code {
		case multiaddr.P_IP4, multiaddr.P_IP6:
			ip = c.Value()
		case multiaddr.P_CIRCUIT:
			return "", false
		}
	}
	return ip, ip != ""
}

// selfSignedCert makes the bulk listener's certificate: a fresh P-256 key,
// valid for a year (nothing checks more than its hash).
func selfSignedCert() (tls.Certificate, [sha256.Size]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, [sha256.Size]byte{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, [sha256.Size]byte{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		DNSNames:     []string{"shoal-weights"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, [sha256.Size]byte{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, sha256.Sum256(der), nil
}

// close stops accepting and drops connections still being admitted.
func (bl *bulkListener) close() {
	_ = bl.ln.Close()
	bl.mu.Lock()
	for c := range bl.admitting {
		_ = c.Close()
	}
	bl.mu.Unlock()
}
