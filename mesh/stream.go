package mesh

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"
)

// ErrNotMember: the peer is not an admitted member of this pool.
var ErrNotMember = errors.New("mesh: peer is not a pool member")

// Handle serves protocol pid to admitted members only: a stream from a peer
// that has not passed admission is reset before h sees it. Other packages
// (weight transfer, reservations, the gateway) put their protocols on the
// mesh through Handle, never on the raw host.
func (n *Node) Handle(pid protocol.ID, h network.StreamHandler) {
	gatedHost{Host: n.host, a: n.adm}.SetStreamHandler(pid, h)
}

// RemoveHandler stops serving pid.
func (n *Node) RemoveHandler(pid protocol.ID) { n.host.RemoveStreamHandler(pid) }

// OpenStream opens a stream to member p speaking pid (the first of pids p
// supports). It connects using the addresses this node knows for p (from
// the peerstore, else from p's node record) and runs
// admission first when needed, so the stream never reaches a non-member; it
// fails with ErrNotMember when p cannot prove it holds the pool secret.
func (n *Node) OpenStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if len(pids) == 0 {
		return nil, fmt.Errorf("%w: OpenStream needs a protocol", ErrConfig)
	}
	if n.host.Network().Connectedness(p) != network.Connected {
		addrs := n.host.Peerstore().Addrs(p)
		if len(addrs) == 0 {
			// Not met yet: its signed record names its addresses.
			addrs = n.recordAddrs(ctx, p)
		}
		if err := n.host.Connect(ctx, peer.AddrInfo{ID: p, Addrs: addrs}); err != nil {
			return nil, fmt.Errorf("mesh: connecting to %s: %w", p, err)
		}
	}
	if err := n.ensureAdmitted(ctx, p); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotMember, p, err)
	}
	s, err := n.host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, fmt.Errorf("mesh: opening %s to %s: %w", pids[0], p, err)
	}
	return s, nil
}

// keyCID maps an application key (a model ID, say) to the CID under which
// the pool's DHT keeps its provider records. The DHT is private to the pool,
// so these keys never meet a public network.
func keyCID(key string) (cid.Cid, error) {
	sum := sha256.Sum256([]byte(key))
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.Raw, mh), nil
}

// Provide announces in the pool's DHT that this node can serve key. The
// announcement expires after the DHT's provider TTL (48 h in kad-dht), so a
// provider that keeps serving calls Provide again every few hours.
func (n *Node) Provide(ctx context.Context, key string) error {
	c, err := keyCID(key)
	if err != nil {
		return err
	}
	if err := n.dht.Provide(ctx, c, true); err != nil {
		return fmt.Errorf("mesh: announcing %q: %w", key, err)
	}
	return nil
}

// FindProviders returns up to max members (0: no limit) that announced key,
// this node excluded, with the addresses the DHT knows for them. It returns
// what it found when ctx ends.
func (n *Node) FindProviders(ctx context.Context, key string, max int) ([]peer.AddrInfo, error) {
	c, err := keyCID(key)
	if err != nil {
		return nil, err
	}
	var out []peer.AddrInfo
	for ai := range n.dht.FindProvidersAsync(ctx, c, max) {
		// kad-dht accepts a provider record only from the provider itself,
		// and only admitted members reach our DHT, so every entry is a member.
		if ai.ID == n.host.ID() {
			continue
		}
		if len(ai.Addrs) > 0 {
			n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		}
		out = append(out, ai)
	}
	return out, nil
}

// recordAddrs are the addresses in p's node record: the copy membership
// holds, else the one in the DHT.
func (n *Node) recordAddrs(ctx context.Context, p peer.ID) []multiaddr.Multiaddr {
	n.mu.Lock()
	r := n.members.recordOf(p)
	n.mu.Unlock()
	if r != nil {
		return parseAddrs(r.Addrs)
	}
	if r, _, err := n.lookup(ctx, p); err == nil {
		return parseAddrs(r.Addrs)
	}
	return nil
}
