// Package weightcache owns the content-addressed store of model files on
// one machine and the moving of models between pool members: import,
// manifests, chunk verification, swarm fetch from many peers, serving
// peers, origin (HTTP) downloads, eviction and pins, and materialising a
// model as a read-only directory for a container. It trusts no byte it has
// not verified, and it knows nothing of deployments or placement.
//
// A model is a Manifest: its files (path, size, whole-file SHA-256) and
// each file's BLAKE3 chunk hashes. The manifest's canonical JSON bytes are
// hashed into the model ID (a CIDv1 string), so the ID pins every byte.
//
// Entry points:
//
//   - Open a Store on a directory; Add imports a directory or file;
//     FetchOrigin downloads a first copy over HTTP(S) (Hugging Face layout
//     via HFFiles); Path materialises a complete model (hard links to
//     verified blobs plus .shoal/manifest.json) and returns its directory;
//     List/Stat/Complete describe what is held; Pin/Unpin, Remove, Evict
//     and Config.MaxBytes govern space; Verify re-hashes a model.
//   - Serve answers other members' manifest and chunk requests over
//     Protocol, from complete models (super-seeding: each chunk to one
//     fetcher first, see seeding) and from downloads in progress.
//   - A Fetcher (NewFetcher) pulls a model from providers found in the
//     pool's DHT and among the members that ask it for the same model:
//     rarest chunk first, a peer holding the whole model asked last while
//     partial peers can trade, requests pipelined per peer, an end game
//     for the tail, a stall timeout per peer, a ban per model for any
//     peer that sends a bad chunk, and resume from the verified chunks on
//     disk. Progress snapshots feed a progress bar.
//
// The mesh is reached only through the small interfaces declared here
// (Dialer, Finder, Announcer, Registrar), which *mesh.Node satisfies.
// Trust flows from the ID: manifests are checked against it, chunks
// against the manifest before they are written, and whole files against
// their SHA-256 before they become shared blobs (so one model cannot
// poison another that shares a file hash). See README.md for the layout
// and the transfer pipeline.
package weightcache
