package dashboard

import (
	"context"

	"github.com/shoalmesh/shoal/market"
)

// The views the dashboard reads, one role each. The daemon implements them
// over the state its control API serves. Every method may be called from
// any goroutine, once per page refresh, and must not block on the network
// except CreditSource.Credits, which gets a context with a deadline.

// SelfSource describes the node serving the dashboard.
type SelfSource interface {
	Self() Self
}

// NodeSource lists the pool's members as this node sees them.
type NodeSource interface {
	Nodes() []Node
}

// DeploymentSource lists the pool's deployments with their replicas.
type DeploymentSource interface {
	Deployments() []Deployment
}

// WeightSource lists the models in the pool and the transfers under way.
type WeightSource interface {
	Weights() Weights
}

// CreditSource reads the market ledger as this node computes it. It
// returns an error wrapping ErrUnavailable when the node keeps no ledger.
type CreditSource interface {
	Credits(ctx context.Context) (market.Report, error)
}
