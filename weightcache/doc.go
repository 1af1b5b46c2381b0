// Package weightcache will own the content-addressed store of model files:
// import, manifests, chunk verification, swarm fetch from many peers, serving
// peers, eviction and pins. It must not trust any byte it has not verified.
// Nothing is implemented yet; see docs/ARCHITECTURE.md.
package weightcache
