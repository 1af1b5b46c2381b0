// Package node is the shoal daemon on one machine and the client the CLI uses
// to talk to it.
//
// It owns the node's home directory (identity key, pool membership, last known
// peers, the single-daemon lock, the control socket and the daemon log), the
// daemon's configuration, the wiring of hardware inventory into the mesh, and
// the control API: HTTP+JSON on the unix socket HOME/control.sock.
//
// Layout of a home directory (created 0700):
//
//	identity.key   libp2p ed25519 private key (crypto.MarshalPrivateKey), 0600
//	pool.json      the pool secret (hex) and its bootstrap multiaddrs, 0600
//	peers.json     last known member addresses, reused as ExtraPeers on restart
//	lock           flock(2)ed by the running daemon, which writes its PID into it
//	control.sock   the control API (0600), present while a daemon runs
//	daemon.log     output of a daemon started with --detach
//
// A daemon's life: lock home → identity → pool → hardware prober → mesh →
// join (when there is anyone to join) → control API → inventory refresh loop,
// until its context ends, POST /v1/leave arrives or the mesh reports a fatal
// error. Shutting down leaves the pool gracefully, saves peers.json, removes the
// socket and releases the lock.
//
// The package must not implement placement, transfer or container logic; it
// wires the packages that do. It talks to the mesh through the narrow
// interfaces in mesh.go so the control API can be tested without a network.
package node
