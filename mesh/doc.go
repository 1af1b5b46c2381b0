// Package mesh is the pool's network: a libp2p host (QUIC and TCP), pool
// admission (a mutual challenge-response over the pool secret, enforced by a
// connection gater and on every stream), a private Kademlia DHT holding each
// member's signed node record, GossipSub heartbeats, membership with failure
// detection, mDNS discovery and NAT traversal.
//
// It knows nodes, records and members. It must not know what a deployment,
// template or model is: those ride on top of it.
package mesh
