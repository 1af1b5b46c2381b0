package gateway

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// ProtocolID carries HTTP/1.1 between gateways: one libp2p stream is one
// keep-alive HTTP connection from the sending gateway to the receiving
// one, which serves it with net/http and forwards each request to a
// replica of its own. Requests carry the deployment and the chosen replica
// in headers (hdrDeployment, hdrReplica).
const ProtocolID protocol.ID = "/shoal/http/1.0.0"

// Headers between gateways. A client's copies are dropped on arrival.
const (
	hdrDeployment = "Shoal-Deployment"
	hdrReplica    = "Shoal-Replica"
	// hdrGone marks an answer from a node that holds no replica the
	// request could go to (the sender's directory was behind): the
	// sender may send the request to another replica.
	hdrGone = "Shoal-Replica-Gone"
)

// peerAddr is a libp2p peer as a net.Addr.
type peerAddr peer.ID

func (a peerAddr) Network() string { return "libp2p" }
func (a peerAddr) String() string  { return peer.ID(a).String() }

// streamConn is a libp2p stream as a net.Conn. Closing it closes the
// stream both ways.
type streamConn struct {
	network.Stream
}

func (c streamConn) LocalAddr() net.Addr  { return peerAddr(c.Conn().LocalPeer()) }
func (c streamConn) RemoteAddr() net.Addr { return peerAddr(c.Conn().RemotePeer()) }

// dialPeer is the sending side's DialContext: addr is "PEERID:80", the
// URL host the remote proxy writes.
func dialPeer(so StreamOpener) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		p, err := peer.Decode(host)
		if err != nil {
			return nil, fmt.Errorf("%w: %q is not a peer ID: %v", ErrNoRoute, host, err)
		}
		s, err := so.OpenStream(ctx, p, ProtocolID)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoRoute, err)
		}
		return streamConn{s}, nil
	}
}

// streamListener hands streams that arrive on ProtocolID to an http.Server
// as connections. The stream handler blocks until the server accepts (the
// server's accept loop does nothing else) or the listener closes.
type streamListener struct {
	self peer.ID
	ch   chan network.Stream
	done chan struct{}
	once sync.Once
}

var _ net.Listener = (*streamListener)(nil)

func newStreamListener(self peer.ID) *streamListener {
	return &streamListener{self: self, ch: make(chan network.Stream), done: make(chan struct{})}
}

// handle is the libp2p stream handler.
func (l *streamListener) handle(s network.Stream) {
	select {
	case l.ch <- s:
	case <-l.done:
		_ = s.Reset()
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case s := <-l.ch:
		return streamConn{s}, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return peerAddr(l.self) }
