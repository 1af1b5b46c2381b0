package node

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

// What node needs of the mesh, split by role. *mesh.Node satisfies all of
// them; the control API's tests satisfy MeshView with a small fake.
// Every method may be called from any goroutine.

// Self is this node's place in the pool.
type Self interface {
	ID() peer.ID
	PoolID() string
	Addrs() []multiaddr.Multiaddr
	// Token is the join token for this pool, with this node as a bootstrap.
	Token() string
}

// Membership is the pool as this node sees it.
type Membership interface {
	Members() []mesh.Member
}

// alivePeers are the alive members of ms other than self.
func alivePeers(ms Membership, self peer.ID) []peer.ID {
	var out []peer.ID
	for _, m := range ms.Members() {
		if !m.Self && m.State == mesh.StateAlive && m.PeerID != self {
			out = append(out, m.PeerID)
		}
	}
	return out
}

// RecordLookup fetches a member's verified node record from the pool's DHT.
type RecordLookup interface {
	LookupRecord(ctx context.Context, id peer.ID) (*mesh.Record, error)
}

// MeshView is everything the control API reads.
type MeshView interface {
	Self
	Membership
	RecordLookup
}

// meshNode is what the daemon drives over a mesh's life.
type meshNode interface {
	MeshView
	Join(ctx context.Context) error
	SetInventory(inv hardware.Inventory)
	KnownPeers() []peer.AddrInfo
	// Fatal yields an error when the mesh can no longer run (e.g. another
	// machine turned up with our identity).
	Fatal() <-chan error
	Leave(ctx context.Context) error
	Close() error
}

var (
	_ MeshView = (*mesh.Node)(nil)
	_ meshNode = (*mesh.Node)(nil)
)

// prober is the hardware prober the daemon polls (*hardware.Prober).
type prober interface {
	Probe(ctx context.Context) (hardware.Inventory, error)
	Mode() string
	NVMLStatus() error
	Close()
}

// hwProber adapts *hardware.Prober to prober.
type hwProber struct{ p *hardware.Prober }

func (h hwProber) Probe(ctx context.Context) (hardware.Inventory, error) { return h.p.Probe(ctx) }
func (h hwProber) Mode() string                                          { return h.p.Mode() }
func (h hwProber) NVMLStatus() error                                     { return h.p.NVMLStatus() }
func (h hwProber) Close()                                                { h.p.Close() }
