package mesh

import (
	"io"
	"log/slog"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// KeyOf exposes a node's key to tests that copy an identity.
func (n *Node) KeyOf() crypto.PrivKey { return n.cfg.Key }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
