// Package dashboard serves a node's web dashboard: one embedded page (HTML,
// CSS and plain JavaScript; nothing fetched from elsewhere, no build step)
// and the small read-only JSON API the page polls, under /api/dashboard/.
// It also serves the daemon's Prometheus registry at /metrics, so that a
// scraper reaches every node over HTTP.
//
// Routes of Dashboard.Handler:
//
//	GET /                          the page (no pool data in it)
//	GET /dashboard/{file}          its script and style sheet
//	GET /api/dashboard/summary     Summary: this node, member and GPU counts
//	GET /api/dashboard/nodes       []Node: members and their GPUs
//	GET /api/dashboard/deployments []Deployment: deployments and replicas
//	GET /api/dashboard/weights     Weights: who holds which model, transfers
//	GET /api/dashboard/credits     Credits: the market ledger, when the node has one
//	GET /metrics                   Prometheus text format
//	anything else                  the next handler (the gateway)
//
// With API keys configured, /api/dashboard/* and /metrics answer 401
// without "Authorization: Bearer KEY"; the page asks for the key (or takes
// it once from ?key=) and keeps it in the tab's sessionStorage.
//
// The package owns presentation only. It declares the narrow views it reads
// (SelfSource, NodeSource, DeploymentSource, WeightSource, CreditSource);
// the daemon satisfies them from the state its control API serves. It must
// not change pool state: every route is a read.
package dashboard
