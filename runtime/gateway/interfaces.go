package gateway

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Replica is a ready replica of a deployment as the pool state lists it.
type Replica struct {
	// ID names the replica uniquely on its node.
	ID string
	// Deployment is the deployment it serves; its name is the model name
	// that requests carry.
	Deployment string
	// Node is the peer that runs it.
	Node peer.ID
	// Endpoint is its loopback base URL (http://127.0.0.1:PORT). The
	// gateway uses it only when Node is this node; for a replica elsewhere
	// the request goes to Node's gateway, which looks up its own.
	Endpoint string
	// Load is the requests in flight on the replica as last reported to
	// the pool (a hint; the gateway adds the requests it has in flight).
	Load int
}

// Directory is the gateway's view of the pool's replicas. The daemon
// implements it from the pool state. Methods are called concurrently from
// request goroutines and must not block on the network.
type Directory interface {
	// Lookup returns the ready replicas of deployment, a channel closed
	// when that set next changes (a replica turns ready or goes away) and
	// whether the deployment exists at all (ready or scaled to zero). The
	// returned slice is not modified by the gateway.
	Lookup(deployment string) (ready []Replica, changed <-chan struct{}, known bool)
	// Deployments lists every served deployment name, ready or scaled to
	// zero, in a stable order.
	Deployments() []string
}

// Scaler asks for replicas: the gateway calls ScaleUp when a request waits
// for a deployment without a ready replica, from that request's goroutine,
// again every Config.ScaleUpRetry while requests still wait. It should
// return once the deployment's coordinator has the request (it may also
// block until a replica is ready); ctx ends with the waiting request.
type Scaler interface {
	ScaleUp(ctx context.Context, deployment string) error
}

// Reporter receives the autoscaling signal: for each deployment that saw
// traffic in the last Config.ReportInterval, the average number of
// requests this gateway had in flight or waiting. The interval after the
// last request is reported with 0, then nothing until traffic returns:
// silence means idle. The coordinator sums samples of all gateways into an
// Autoscaler. Report is called from Tick and must not block.
type Reporter interface {
	Report(deployment string, s Sample)
}

// Sample is one gateway's concurrency for one deployment over one interval.
type Sample struct {
	// At is the end of the interval.
	At time.Time
	// Interval is its length.
	Interval time.Duration
	// Concurrency is the time-weighted average of requests in flight or
	// waiting.
	Concurrency float64
	// Requests is how many requests arrived in it.
	Requests int
	// Waiting is how many requests wait for a replica at At.
	Waiting int
}

// StreamOpener opens a stream to a pool member; *mesh.Node satisfies it.
type StreamOpener interface {
	OpenStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error)
}

// StreamServer serves a protocol to pool members only; *mesh.Node
// satisfies it.
type StreamServer interface {
	Handle(pid protocol.ID, h network.StreamHandler)
	RemoveHandler(pid protocol.ID)
}

// Clock tells the time of the concurrency samples; tests pass a fake one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
