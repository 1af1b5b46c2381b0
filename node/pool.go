package node

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/mesh"
)

// poolFile is the JSON form of pool.json.
type poolFile struct {
	PoolID    string   `json:"pool_id,omitempty"` // informative; the secret is what counts
	Secret    string   `json:"secret"`            // hex of the 32-byte pool secret
	Bootstrap []string `json:"bootstrap"`         // multiaddrs with /p2p/ID
}

// loadPool reads HOME/pool.json. ok is false when the home has no pool yet.
func loadPool(home string) (p mesh.Pool, ok bool, err error) {
	path := filepath.Join(home, PoolFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return mesh.Pool{}, false, nil
	}
	if err != nil {
		return mesh.Pool{}, false, fmt.Errorf("node: read pool: %w", err)
	}
	bad := func(err error) error {
		return fmt.Errorf("%w: %s: join the pool again with `shoal join TOKEN --force --home %s`: %w",
			ErrBadPoolFile, path, home, err)
	}
	var f poolFile
	if err := json.Unmarshal(b, &f); err != nil {
		return mesh.Pool{}, false, bad(err)
	}
	secret, err := hex.DecodeString(f.Secret)
	if err != nil {
		return mesh.Pool{}, false, bad(err)
	}
	if len(secret) != len(p.Secret) {
		return mesh.Pool{}, false, bad(fmt.Errorf("secret is %d bytes, want %d", len(secret), len(p.Secret)))
	}
	copy(p.Secret[:], secret)
	p.Bootstrap, err = parseP2PAddrs(f.Bootstrap)
	if err != nil {
		return mesh.Pool{}, false, bad(err)
	}
	return p, true, nil
}

func savePool(home string, p mesh.Pool) error {
	f := poolFile{
		PoolID:    p.ID(),
		Secret:    hex.EncodeToString(p.Secret[:]),
		Bootstrap: formatP2PAddrs(p.Bootstrap),
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("node: encode pool: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(home, PoolFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("node: write pool: %w", err)
	}
	return nil
}

// choosePool decides the pool a daemon runs in. join is nil for `up`: resume
// the home's pool or make a new one (create, called only then). With a join
// pool, a home that belongs to another pool is refused unless force.
// It does not write anything; see adoptPool.
func choosePool(home string, join *mesh.Pool, force bool, create func() (mesh.Pool, error)) (p mesh.Pool, resumed bool, err error) {
	existing, ok, err := loadPool(home)
	if err != nil && !(join != nil && force) {
		return mesh.Pool{}, false, err
	}
	if join == nil {
		if ok {
			return existing, true, nil
		}
		p, err := create()
		if err != nil {
			return mesh.Pool{}, false, fmt.Errorf("node: create pool: %w", err)
		}
		return p, false, nil
	}
	if ok && existing.Secret != join.Secret && !force {
		return mesh.Pool{}, false, fmt.Errorf("%w: home %s belongs to pool %s, the token is for pool %s; "+
			"pass --force to leave that pool for this one, or pass another --home",
			ErrOtherPool, home, poolName(existing), poolName(*join))
	}
	return *join, ok && existing.Secret == join.Secret, nil
}

// adoptPool writes p as the home's pool. Switching pools forgets the old
// pool's peers.
func adoptPool(home string, p mesh.Pool) error {
	old, ok, _ := loadPool(home)
	if ok && old.Secret != p.Secret {
		if err := os.Remove(filepath.Join(home, PeersFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("node: forget old pool's peers: %w", err)
		}
	}
	return savePool(home, p)
}

func poolName(p mesh.Pool) string {
	if id := p.ID(); id != "" {
		return id
	}
	return hex.EncodeToString(p.Secret[:4]) + "…"
}

// peersFile is the JSON form of peers.json.
type peersFile struct {
	SavedAt time.Time `json:"saved_at"`
	Peers   []string  `json:"peers"` // multiaddrs with /p2p/ID
}

// loadPeers reads HOME/peers.json; a missing file is no peers.
func loadPeers(home string) ([]peer.AddrInfo, error) {
	b, err := os.ReadFile(filepath.Join(home, PeersFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: read peers: %w", err)
	}
	var f peersFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("node: read peers: %w", err)
	}
	infos, err := parseP2PAddrs(f.Peers)
	if err != nil {
		return nil, fmt.Errorf("node: read peers: %w", err)
	}
	return infos, nil
}

// writePeers writes peers.json with addrs, as formatP2PAddrs gives them.
func writePeers(home string, addrs []string, now time.Time) error {
	b, err := json.MarshalIndent(peersFile{SavedAt: now.UTC(), Peers: addrs}, "", "  ")
	if err != nil {
		return fmt.Errorf("node: encode peers: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(home, PeersFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("node: write peers: %w", err)
	}
	return nil
}

// parseP2PAddrs parses multiaddrs ending in /p2p/ID and groups them by
// peer, in the order the peers first appear.
func parseP2PAddrs(ss []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	index := map[peer.ID]int{}
	for _, s := range ss {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", s, err)
		}
		info, err := peer.AddrInfoFromP2pAddr(ma)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", s, err)
		}
		i, ok := index[info.ID]
		if !ok {
			i = len(out)
			index[info.ID] = i
			out = append(out, peer.AddrInfo{ID: info.ID})
		}
		out[i].Addrs = append(out[i].Addrs, info.Addrs...)
	}
	return out, nil
}

func formatP2PAddrs(infos []peer.AddrInfo) []string {
	out := []string{}
	for _, info := range infos {
		if len(info.Addrs) == 0 {
			continue // an ID alone is no help to a restart
		}
		mas, err := peer.AddrInfoToP2pAddrs(&info)
		if err != nil {
			continue
		}
		for _, ma := range mas {
			out = append(out, ma.String())
		}
	}
	return out
}

// withoutPeer drops self (and entries without addresses) from infos.
func withoutPeer(infos []peer.AddrInfo, self peer.ID) []peer.AddrInfo {
	out := infos[:0:0]
	for _, info := range infos {
		if info.ID != self && len(info.Addrs) > 0 {
			out = append(out, info)
		}
	}
	return out
}
