package coordinator

import (
	"crypto/sha256"
	"encoding/binary"
	"sort"
)

// weight is the rendezvous (highest-random-weight) score of member for key:
// the first 8 bytes of SHA-256(key NUL member). SHA-256 rather than a fast
// hash so that no member can pick an ID that wins every deployment.
func weight(key, member string) uint64 {
	h := sha256.New()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(member))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Rank orders members for key by rendezvous weight, highest first (ties,
// which need a SHA-256 collision, by ID). The first is the owner, the
// second takes over when the first is gone, and so on. Removing a member
// moves only the keys it owned; adding one moves only the keys it now wins.
func Rank(key string, members []string) []string {
	type scored struct {
		id string
		w  uint64
	}
	s := make([]scored, 0, len(members))
	seen := map[string]bool{}
	for _, m := range members {
		if m == "" || seen[m] {
			continue
		}
		seen[m] = true
		s = append(s, scored{m, weight(key, m)})
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].w != s[j].w {
			return s[i].w > s[j].w
		}
		return s[i].id < s[j].id
	})
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.id
	}
	return out
}

// Owner is the member that coordinates key: the highest rendezvous weight
// among members, "" when there are none.
func Owner(key string, members []string) string {
	best, bestW := "", uint64(0)
	for _, m := range members {
		if m == "" {
			continue
		}
		w := weight(key, m)
		if best == "" || w > bestW || (w == bestW && m < best) {
			best, bestW = m, w
		}
	}
	return best
}
