package mesh

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/mr-tron/base58"
	"github.com/multiformats/go-multiaddr"
)

// Token errors. A token that fails to parse changes nothing.
var (
	ErrTokenPrefix    = errors.New("mesh: not a shoal join token (want prefix \"shoal1.\")")
	ErrTokenMalformed = errors.New("mesh: malformed join token")
	ErrTokenChecksum  = errors.New("mesh: join token checksum mismatch (mistyped or truncated?)")
)

const (
	tokenPrefix  = "shoal1."
	tokenVersion = 1
	// maxTokenLen bounds what ParseToken reads; a real token with a few
	// bootstrap peers is a few hundred characters.
	maxTokenLen = 8 << 10
	// maxTokenAddrs bounds the bootstrap addresses a token may carry.
	maxTokenAddrs = 32
	checksumLen   = 4
)

// SecretSize is the size of a pool secret in bytes.
const SecretSize = 32

// Pool is what makes a set of peers one pool: the shared secret every member
// proves it holds, and addresses of members to join through.
type Pool struct {
	Secret    [SecretSize]byte
	Bootstrap []peer.AddrInfo
}

// NewPool returns a pool with a fresh random secret and no bootstrap peers.
func NewPool() (Pool, error) {
	var p Pool
	if _, err := rand.Read(p.Secret[:]); err != nil {
		return Pool{}, fmt.Errorf("mesh: generating pool secret: %w", err)
	}
	return p, nil
}

// ID is the pool's public name: a hash of the secret, safe to print and log.
// It names the pool's DHT protocols and gossip topics.
func (p Pool) ID() string {
	sum := sha256.Sum256(append([]byte("shoal/pool-id/v1\x00"), p.Secret[:]...))
	return hex.EncodeToString(sum[:8])
}

// EncodeToken packs a pool into a join token: "shoal1." followed by base58 of
// version, secret, bootstrap addresses and a 4-byte SHA-256 checksum.
func EncodeToken(p Pool) string {
	var buf bytes.Buffer
	buf.WriteByte(tokenVersion)
	buf.Write(p.Secret[:])
	var addrs [][]byte
	for _, ai := range p.Bootstrap {
		full, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil {
			continue
		}
		for _, a := range full {
			if len(addrs) == maxTokenAddrs {
				break
			}
			addrs = append(addrs, a.Bytes())
		}
	}
	buf.Write(binary.AppendUvarint(nil, uint64(len(addrs))))
	for _, a := range addrs {
		buf.Write(binary.AppendUvarint(nil, uint64(len(a))))
		buf.Write(a)
	}
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:checksumLen])
	return tokenPrefix + base58.Encode(buf.Bytes())
}

// ParseToken decodes a join token. Errors wrap ErrTokenPrefix,
// ErrTokenMalformed or ErrTokenChecksum and say what was wrong.
func ParseToken(s string) (Pool, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, tokenPrefix) {
		return Pool{}, ErrTokenPrefix
	}
	if len(s) > maxTokenLen {
		return Pool{}, fmt.Errorf("%w: %d characters, at most %d", ErrTokenMalformed, len(s), maxTokenLen)
	}
	raw, err := base58.Decode(s[len(tokenPrefix):])
	if err != nil {
		return Pool{}, fmt.Errorf("%w: not base58 (%v)", ErrTokenMalformed, err)
	}
	if len(raw) < 1+SecretSize+1+checksumLen {
		return Pool{}, fmt.Errorf("%w: too short (%d bytes)", ErrTokenMalformed, len(raw))
	}
	body, sum := raw[:len(raw)-checksumLen], raw[len(raw)-checksumLen:]
	want := sha256.Sum256(body)
	if !bytes.Equal(sum, want[:checksumLen]) {
		return Pool{}, ErrTokenChecksum
	}
	if body[0] != tokenVersion {
		return Pool{}, fmt.Errorf("%w: version %d, this shoal reads version %d", ErrTokenMalformed, body[0], tokenVersion)
	}
	var p Pool
	copy(p.Secret[:], body[1:1+SecretSize])
	rest := body[1+SecretSize:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > maxTokenAddrs {
		return Pool{}, fmt.Errorf("%w: bad address count", ErrTokenMalformed)
	}
	rest = rest[k:]
	var addrs []multiaddr.Multiaddr
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(rest)
		if k <= 0 || l > uint64(len(rest)-k) {
			return Pool{}, fmt.Errorf("%w: address %d truncated", ErrTokenMalformed, i)
		}
		a, err := multiaddr.NewMultiaddrBytes(rest[k : k+int(l)])
		if err != nil {
			return Pool{}, fmt.Errorf("%w: address %d: %v", ErrTokenMalformed, i, err)
		}
		addrs = append(addrs, a)
		rest = rest[k+int(l):]
	}
	if len(rest) != 0 {
		return Pool{}, fmt.Errorf("%w: %d trailing bytes", ErrTokenMalformed, len(rest))
	}
	infos, err := groupAddrs(addrs)
	if err != nil {
		return Pool{}, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
	p.Bootstrap = infos
	return p, nil
}

// groupAddrs turns /p2p/ addresses into one AddrInfo per peer, in the order
// the peers first appear.
func groupAddrs(addrs []multiaddr.Multiaddr) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	index := map[peer.ID]int{}
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, fmt.Errorf("address %s: %w", a, err)
		}
		i, ok := index[ai.ID]
		if !ok {
			index[ai.ID] = len(out)
			out = append(out, *ai)
			continue
		}
		out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
	}
	return out, nil
}
