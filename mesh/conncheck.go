package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/multiformats/go-multistream"
)

// A connection whose network vanished without a RST or FIN (a container
// unplugged, Wi-Fi lost, a NAT mapping dropped) stays open at both ends:
// nothing sent on it fails, and only the muxer's keepalive or TCP gives up,
// tens of seconds later. Meanwhile the member's heartbeats stop, so it turns
// suspect. The connection check runs then: it pings every connection to the
// member over that very connection, closes the ones that do not answer
// within PingTimeout, and dials the member again on every address known for
// it. A connection that answers is kept: the member is slow to gossip, and a
// new connection would not help.

// keepaliveInterval is how long a connection may go without receiving
// anything before yamux pings it; a ping unanswered within yamux's write
// timeout (10 s) closes the connection. libp2p's default interval is 30 s,
// so a silently dead connection that no check touches (a member whose
// heartbeats still arrive through others, a peer that is no member) lingers
// about 40 s; at 10 s it lingers about 20 s. The cost is one 12-byte ping
// per idle connection every 10 s; a connection carrying heartbeats is never
// idle that long.
const keepaliveInterval = 10 * time.Second

// yamuxTransport is libp2p's yamux with the shorter keepalive.
func yamuxTransport() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.KeepAliveInterval = keepaliveInterval
	return &t
}

// errBadEcho: a ping came back with other bytes than were sent.
var errBadEcho = errors.New("mesh: ping echo differs")

// checkSoon starts a check of the connections to member p, unless one is
// under way or there is no connection to check. The node owns the goroutine;
// Close waits for it.
func (n *Node) checkSoon(p peer.ID) {
	if p == n.ID() || len(n.host.Network().ConnsToPeer(p)) == 0 {
		return
	}
	n.mu.Lock()
	if n.checking[p] {
		n.mu.Unlock()
		return
	}
	n.checking[p] = true
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.checkConns(p)
		n.mu.Lock()
		delete(n.checking, p)
		n.mu.Unlock()
	}()
}

// checkConns pings each connection to p at once. When all answer it keeps
// them. When one does not, it closes every connection to p and dials p
// afresh: GossipSub forgets a peer's subscriptions when one of its streams
// dies while another connection remains, and learns them again only from a
// new connection, so a dead connection closed beside a live one would leave
// heartbeats flowing one way only. It returns how many dead connections it
// closed.
func (n *Node) checkConns(p peer.ID) int {
	conns := n.host.Network().ConnsToPeer(p)
	if len(conns) == 0 {
		return 0
	}
	dead := make([]bool, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dead[i] = !n.answers(c)
		}()
	}
	wg.Wait()
	closed := 0
	for i, c := range conns {
		if !dead[i] {
			continue
		}
		closed++
		n.met.deadConns.Inc()
		n.met.deadConnsClosed.Add(1)
		n.log.Info("closed dead connection to member", "peer", p, "addr", c.RemoteMultiaddr(), "timeout", n.cfg.PingTimeout)
	}
	if closed == 0 || n.ctx.Err() != nil {
		return closed
	}
	_ = n.host.Network().ClosePeer(p)
	ai := peer.AddrInfo{ID: p, Addrs: n.host.Peerstore().Addrs(p)}
	n.mu.Lock()
	if r := n.members.recordOf(p); r != nil {
		ai.Addrs = append(ai.Addrs, parseAddrs(r.Addrs)...)
	}
	n.mu.Unlock()
	start := time.Now()
	if err := n.connectAndAdmit(n.ctx, ai); err != nil {
		if n.ctx.Err() == nil {
			n.log.Info("member unreachable after closing its dead connections", "peer", p, "err", err)
		}
		return closed
	}
	n.log.Info("reconnected to member", "peer", p, "took", time.Since(start))
	return closed
}

// answers pings the member over c itself (not whichever connection the
// host would pick) and reports whether the echo came back within
// PingTimeout (stretched while this node is overloaded). A
// connection that did not answer is closed before its stream is reset:
// a reset queued on a dead connection could wait for the muxer's write
// timeout.
func (n *Node) answers(c network.Conn) bool {
	if c.IsClosed() {
		return true // gone already; nothing to close
	}
	// An overloaded node (local health score above zero) answers and
	// reads slowly itself: its timeout stretches as its suspicions do.
	n.mu.Lock()
	timeout := n.cfg.PingTimeout * n.members.stretch
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	s, err := c.NewStream(network.WithAllowLimitedConn(ctx, "connection check"))
	if err != nil {
		// Opening a stream sends nothing yet (a closed connection or the
		// resource manager refuses it): that proves nothing either way.
		return true
	}
	err = pingOver(ctx, s)
	// Only silence marks a connection dead: an error that came back (the
	// stream refused or reset) came back over a working connection.
	if timedOut(err) && n.ctx.Err() == nil && !c.IsClosed() {
		_ = c.Close()
		_ = s.Reset()
		return false
	}
	_ = s.Close()
	return true
}

// pingOver runs one round of libp2p's ping protocol on the fresh stream s:
// the protocol header and 32 random bytes go out in one write, and the echo
// must come back before ctx ends.
func pingOver(ctx context.Context, s network.Stream) error {
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	if err := s.SetProtocol(ping.ID); err != nil {
		return err
	}
	lz := multistream.NewMSSelect(s, protocol.ID(ping.ID))
	out := make([]byte, ping.PingSize)
	_, _ = rand.Read(out)
	if _, err := lz.Write(out); err != nil {
		return err
	}
	in := make([]byte, ping.PingSize)
	if _, err := io.ReadFull(lz, in); err != nil {
		return err
	}
	if !bytes.Equal(in, out) {
		return errBadEcho
	}
	return nil
}

// timedOut says whether err is a deadline that passed.
func timedOut(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
