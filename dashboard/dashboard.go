package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoalmesh/shoal/runtime/gateway"
)

// Errors of the dashboard.
var (
	// ErrConfig: New was given an unusable Config.
	ErrConfig = errors.New("dashboard: invalid config")
	// ErrUnavailable: a source has nothing to show on this node (the
	// market ledger of a daemon that keeps none).
	ErrUnavailable = errors.New("dashboard: not available")
)

// Defaults of Config.
const (
	DefaultRefresh        = 2 * time.Second
	DefaultCreditsTimeout = time.Second
)

//go:embed static
var static embed.FS

// Config configures a Dashboard. Self and Nodes are required; a nil
// optional source shows as empty (Deployments, Weights) or "not available"
// (Credits), and a nil Metrics serves no /metrics.
type Config struct {
	Self        SelfSource
	Nodes       NodeSource
	Deployments DeploymentSource
	Weights     WeightSource
	Credits     CreditSource
	// Metrics is served at /metrics in Prometheus text format.
	Metrics prometheus.Gatherer
	// APIKeys, when not empty, are the keys /api/dashboard/* and /metrics
	// require as "Authorization: Bearer KEY" (compared in constant time),
	// the gateway's keys. The page and its assets hold no pool data and
	// load without one.
	APIKeys []string
	// Refresh is how often the page polls. Shorter is livelier and costs
	// each open page five small requests per period. Default 2 s.
	Refresh time.Duration
	// CreditsTimeout bounds one read of the market ledger, so a slow ledger
	// never holds the page. Default 1 s.
	CreditsTimeout time.Duration
	// Now is the clock for Summary.Now; nil: time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Self == nil || c.Nodes == nil {
		return fmt.Errorf("%w: Self and Nodes are required", ErrConfig)
	}
	for _, k := range c.APIKeys {
		if k == "" {
			return fmt.Errorf("%w: empty API key", ErrConfig)
		}
	}
	if c.Refresh < 0 || c.CreditsTimeout < 0 {
		return fmt.Errorf("%w: negative duration", ErrConfig)
	}
	if c.Refresh == 0 {
		c.Refresh = DefaultRefresh
	}
	if c.CreditsTimeout == 0 {
		c.CreditsTimeout = DefaultCreditsTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Dashboard serves the page, its API and /metrics. Safe for concurrent use.
type Dashboard struct {
	cfg    Config
	keys   gateway.KeyRing
	assets http.Handler
}

// New returns a dashboard over cfg's sources.
func New(cfg Config) (*Dashboard, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("dashboard: embedded assets: %w", err)
	}
	return &Dashboard{cfg: cfg, keys: gateway.NewKeyRing(cfg.APIKeys), assets: http.StripPrefix("/dashboard/", http.FileServerFS(sub))}, nil
}

// Handler serves the dashboard's routes and hands every other request to
// next (the gateway; nil answers 404) untouched: no path cleaning or
// redirects, which a workload behind /d/ may not expect.
func (d *Dashboard) Handler(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.page)
	mux.Handle("GET /dashboard/", d.static(d.assets))
	mux.Handle("GET /api/dashboard/summary", d.api(d.summary))
	mux.Handle("GET /api/dashboard/nodes", d.api(d.nodes))
	mux.Handle("GET /api/dashboard/deployments", d.api(d.deployments))
	mux.Handle("GET /api/dashboard/weights", d.api(d.weights))
	mux.Handle("GET /api/dashboard/credits", d.api(d.credits))
	mux.Handle("/api/dashboard/", d.api(func(r *http.Request) (any, int) {
		return errorBody{Error: fmt.Sprintf("no dashboard endpoint %s %s", r.Method, r.URL.Path)}, http.StatusNotFound
	}))
	if d.cfg.Metrics != nil {
		mux.Handle("GET /metrics", d.authorize(promhttp.HandlerFor(d.cfg.Metrics, promhttp.HandlerOpts{})))
	}
	mux.Handle("/", next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ours(r.URL.Path, d.cfg.Metrics != nil) {
			mux.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ours reports whether path is one of the dashboard's routes.
func ours(path string, metrics bool) bool {
	return path == "/" || strings.HasPrefix(path, "/dashboard/") || strings.HasPrefix(path, "/api/dashboard/") ||
		(metrics && path == "/metrics")
}

// headers every dashboard answer carries: the page runs only its own
// script, is never framed, and leaks no ?key= through a Referer.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

func (d *Dashboard) page(w http.ResponseWriter, r *http.Request) {
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		http.Error(w, "dashboard: page missing from the binary", http.StatusInternalServerError)
		return
	}
	setSecurityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

func (d *Dashboard) static(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// errorBody is the body of every API error.
type errorBody struct {
	Error string `json:"error"`
}

// api serves one JSON endpoint behind the API key.
func (d *Dashboard) api(f func(r *http.Request) (any, int)) http.Handler {
	return d.authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, code := f(r)
		writeJSON(w, code, v)
	}))
}

func (d *Dashboard) authorize(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-store")
		if !d.keys.Allows(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="shoal"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: "missing or wrong API key: send Authorization: Bearer KEY (the gateway's key)"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "dashboard: encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func (d *Dashboard) summary(r *http.Request) (any, int) {
	s := Summary{
		Self:          d.cfg.Self.Self(),
		RefreshMillis: d.cfg.Refresh.Milliseconds(),
		Auth:          len(d.keys) > 0,
		Now:           d.cfg.Now(),
	}
	for _, n := range d.cfg.Nodes.Nodes() {
		s.Members++
		if n.State != "alive" {
			continue
		}
		s.Alive++
		for _, g := range n.GPUs {
			s.GPUs++
			s.VRAMTotalBytes += g.VRAMTotalBytes
			s.VRAMUsedBytes += g.VRAMUsedBytes
		}
	}
	if d.cfg.Deployments != nil {
		s.Deployments = len(d.cfg.Deployments.Deployments())
	}
	return s, http.StatusOK
}

func (d *Dashboard) nodes(r *http.Request) (any, int) {
	ns := d.cfg.Nodes.Nodes()
	if ns == nil {
		ns = []Node{}
	}
	for i := range ns {
		if ns[i].GPUs == nil {
			ns[i].GPUs = []GPU{}
		}
	}
	return ns, http.StatusOK
}

func (d *Dashboard) deployments(r *http.Request) (any, int) {
	out := []Deployment{}
	if d.cfg.Deployments != nil {
		out = append(out, d.cfg.Deployments.Deployments()...)
	}
	for i := range out {
		if out[i].Replicas == nil {
			out[i].Replicas = []Replica{}
		}
	}
	return out, http.StatusOK
}

func (d *Dashboard) weights(r *http.Request) (any, int) {
	var w Weights
	if d.cfg.Weights != nil {
		w = d.cfg.Weights.Weights()
	}
	if w.Models == nil {
		w.Models = []Model{}
	}
	if w.Transfers == nil {
		w.Transfers = []Transfer{}
	}
	return w, http.StatusOK
}

// credits never fails the request: a node without a ledger, or one that
// does not answer within CreditsTimeout, shows "not available" and why.
func (d *Dashboard) credits(r *http.Request) (any, int) {
	if d.cfg.Credits == nil {
		return Credits{Reason: "this node keeps no market ledger"}, http.StatusOK
	}
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.CreditsTimeout)
	defer cancel()
	rep, err := d.cfg.Credits.Credits(ctx)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			d.cfg.Logger.Debug("dashboard: reading the market ledger failed", "err", err)
		}
		return Credits{Reason: err.Error()}, http.StatusOK
	}
	return Credits{Available: true, Report: &rep}, http.StatusOK
}
