// Package gateway is the OpenAI-compatible front door that every node of a
// pool runs. It owns:
//
//   - routing: /v1/chat/completions, /v1/completions and /v1/embeddings by
//     the body's "model" field, /d/<deployment>/… for any HTTP workload, and
//     /v1/models listing every served deployment;
//   - choosing a replica: a ready replica on this node first, else the least
//     loaded of two picked at random (power of two choices);
//   - forwarding: to a local replica over loopback HTTP, to a replica on
//     another node as HTTP/1.1 over a libp2p stream (ProtocolID) to that
//     node's gateway, which hands it to its own replica; bodies stream both
//     ways and server-sent events pass through chunk by chunk;
//   - scale from zero: a request for a deployment without a ready replica
//     waits in a bounded queue with a deadline while the Scaler asks for
//     one, and goes on the moment the Directory lists it;
//   - the autoscaling signal: per-deployment concurrency sampled over time
//     and handed to a Reporter, and Autoscaler, the pure rule (stable and
//     panic windows, scale to zero after an idle timeout) that turns the
//     pool's samples into a desired replica count;
//   - optional API keys, errors in OpenAI's format and Prometheus metrics.
//
// It must not choose where a replica runs nor start one (the scheduler's
// coordinator and the runtime backends do), keep the pool's replica list
// (the daemon does, behind Directory), or forward a request arriving over
// libp2p anywhere but to a replica the Directory places on this node: a
// pool member cannot make a gateway proxy to an address of its choosing.
//
// Its collaborators are interfaces declared here and satisfied elsewhere:
// Directory (ready replicas), Scaler (scale up a deployment), Reporter
// (concurrency samples), StreamOpener and StreamServer (*mesh.Node).
// Package gatewaytest has in-memory versions that record what they get.
package gateway
