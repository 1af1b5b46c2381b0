package gateway

import "github.com/libp2p/go-libp2p/core/peer"

// pick chooses the replica for a request: a replica on this node (self)
// when there is one, else any; among the candidates, the less loaded of
// two drawn at random (power of two choices), which spreads load almost as
// well as least-loaded without every gateway herding onto the same replica
// from stale load hints. load gives a replica's load; rnd(n) a uniform
// integer in [0,n). It returns false when rs is empty.
func pick(rs []Replica, self peer.ID, load func(Replica) int, rnd func(n int) int) (Replica, bool) {
	nLocal := 0
	for _, r := range rs {
		if r.Node == self {
			nLocal++
		}
	}
	if nLocal > 0 && nLocal < len(rs) {
		local := make([]Replica, 0, nLocal)
		for _, r := range rs {
			if r.Node == self {
				local = append(local, r)
			}
		}
		rs = local
	}
	switch len(rs) {
	case 0:
		return Replica{}, false
	case 1:
		return rs[0], true
	}
	i := rnd(len(rs))
	j := rnd(len(rs) - 1)
	if j >= i {
		j++
	}
	if load(rs[j]) < load(rs[i]) {
		i = j
	}
	return rs[i], true
}
