package mesh

import (
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/multiformats/go-multiaddr"
)

// quicAfterTCP is how long a dial waits for TCP before trying QUIC too.
const quicAfterTCP = time.Second

// tcpFirstDialRanker dials a member's direct TCP addresses at once and its
// other addresses (QUIC, relays) quicAfterTCP later, ranked among themselves
// as libp2p's default ranker does. Measured on loopback, a TCP connection
// (Noise or TLS, yamux) moves gossip and bulk weight chunks for about half
// the CPU of a QUIC one (5.5 against 10.5 CPU-seconds per GiB of chunks; the
// 50-node pool's steady gossip likewise), and a member carries both. QUIC
// remains the fallback where TCP is filtered, and hole punching (DCUtR)
// dials on its own path.
func tcpFirstDialRanker(addrs []multiaddr.Multiaddr) []network.AddrDelay {
	var tcp, rest []multiaddr.Multiaddr
	for _, a := range addrs {
		if isDirectTCP(a) {
			tcp = append(tcp, a)
		} else {
			rest = append(rest, a)
		}
	}
	if len(tcp) == 0 {
		return swarm.DefaultDialRanker(addrs)
	}
	out := make([]network.AddrDelay, 0, len(addrs))
	for _, a := range tcp {
		out = append(out, network.AddrDelay{Addr: a})
	}
	for _, d := range swarm.DefaultDialRanker(rest) {
		d.Delay += quicAfterTCP
		out = append(out, d)
	}
	return out
}

// isDirectTCP: a plain TCP address, not a relay circuit or a websocket.
func isDirectTCP(a multiaddr.Multiaddr) bool {
	tcp := false
	for _, c := range a {
		switch c.Protocol().Code {
		case multiaddr.P_TCP:
			tcp = true
		case multiaddr.P_CIRCUIT, multiaddr.P_WS, multiaddr.P_WSS:
			return false
		}
	}
	return tcp
}
