// Package runtime will own running a replica (Docker and process backends,
// health, logs, reconcile after restart) and the gateway (OpenAI-compatible
// routing, request buffering for scale-to-zero, autoscaling signals). It must
// not choose where a replica runs. Nothing is implemented yet; see
// docs/ARCHITECTURE.md.
package runtime
