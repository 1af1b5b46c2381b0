package mesh

import (
	"io"
	"log/slog"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// KeyOf exposes a node's key to tests that copy an identity.
func (n *Node) KeyOf() crypto.PrivKey { return n.cfg.Key }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// CheckConns runs the connection check on the connections to p now and
// returns how many it closed.
func (n *Node) CheckConns(p peer.ID) int { return n.checkConns(p) }
