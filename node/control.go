package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoalmesh/shoal/mesh"
)

// defaultLookupTimeout bounds one DHT lookup behind GET /v1/records/{peer}.
const defaultLookupTimeout = 10 * time.Second

// minPrefixLen is the shortest peer ID prefix /v1/records resolves against
// the members (`shoal nodes` shows 12 characters).
const minPrefixLen = 6

// controlInfo is what the control API reports about the daemon itself.
type controlInfo struct {
	Name      string
	Version   string
	Home      string
	StartedAt time.Time
	Resumed   bool
	Gateway   string
	Runtime   string
	APIKeys   int // how many; never the keys
}

// controlServer serves the control API over a MeshView. Its handlers are
// safe for concurrent use as long as the funcs it holds are.
type controlServer struct {
	mesh          MeshView
	info          controlInfo
	mode          func() string // inventory mode
	ready         func() bool
	leave         func() // asks the daemon to leave; must not block
	metrics       prometheus.Gatherer
	lookupTimeout time.Duration
	weights       *weights // nil: no weight cache (a mesh without streams)
	log           *slog.Logger
}

func (s *controlServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/nodes", s.nodes)
	mux.HandleFunc("GET /v1/token", s.token)
	mux.HandleFunc("GET /v1/records/{peer}", s.record)
	mux.HandleFunc("POST /v1/leave", s.leaveHandler)
	if s.weights != nil {
		s.weights.register(mux)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	// Go's profiler, on the owner-only control socket and nowhere else:
	//	curl --unix-socket HOME/control.sock http://shoal/debug/pprof/profile?seconds=10 > cpu.pprof
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no endpoint %s %s; see GET /v1/status, /v1/nodes, /v1/token, /v1/records/{peer}, /metrics, /debug/pprof/ and POST /v1/leave", r.Method, r.URL.Path)
	})
	return mux
}

func (s *controlServer) status(w http.ResponseWriter, r *http.Request) {
	addrs := []string{}
	for _, a := range s.mesh.Addrs() {
		addrs = append(addrs, a.String())
	}
	writeJSON(w, http.StatusOK, Status{
		PeerID:        s.mesh.ID().String(),
		PoolID:        s.mesh.PoolID(),
		Name:          s.info.Name,
		Version:       s.info.Version,
		Home:          s.info.Home,
		PID:           os.Getpid(),
		Addrs:         addrs,
		StartedAt:     s.info.StartedAt,
		Ready:         s.ready(),
		Resumed:       s.info.Resumed,
		Members:       countMembers(s.mesh.Members()),
		InventoryMode: s.mode(),
		Gateway:       s.info.Gateway,
		Runtime:       s.info.Runtime,
		APIKeys:       s.info.APIKeys,
	})
}

func (s *controlServer) nodes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, memberViews(s.mesh.Members()))
}

func (s *controlServer) token(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, TokenResponse{Token: s.mesh.Token()})
}

func (s *controlServer) record(w http.ResponseWriter, r *http.Request) {
	arg := r.PathValue("peer")
	id, err := s.resolvePeer(arg)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.lookupTimeout)
	defer cancel()
	rec, err := s.mesh.LookupRecord(ctx, id)
	switch {
	case err == nil && rec != nil:
		writeJSON(w, http.StatusOK, rec)
	case err == nil || errors.Is(err, mesh.ErrNotFound) || errors.Is(err, routing.ErrNotFound):
		writeError(w, http.StatusNotFound, "no record of peer %s in the pool's DHT; `shoal nodes` lists the members", id)
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "looking up peer %s took longer than %v; the pool may be partitioned, try again: %v", id, s.lookupTimeout, err)
	default:
		writeError(w, http.StatusBadGateway, "looking up peer %s: %v", id, err)
	}
}

// resolvePeer maps arg to a peer ID: a member's ID, or a unique prefix
// (at least 6 characters) of one, or else any well-formed peer ID. Members
// come first because a short prefix can itself decode as a peer ID.
func (s *controlServer) resolvePeer(arg string) (peer.ID, error) {
	var found []peer.ID
	for _, m := range s.mesh.Members() {
		id := m.PeerID.String()
		if id == arg {
			return m.PeerID, nil
		}
		if len(arg) >= minPrefixLen && strings.HasPrefix(id, arg) {
			found = append(found, m.PeerID)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
	default:
		return "", fmt.Errorf("peer ID prefix %q matches %d members; give more of the ID", arg, len(found))
	}
	id, err := peer.Decode(arg)
	if err != nil {
		return "", fmt.Errorf("%q is not a peer ID nor the prefix of a member's ID (`shoal nodes` lists them): %v", arg, err)
	}
	return id, nil
}

func (s *controlServer) leaveHandler(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusAccepted, LeaveResponse{PoolID: s.mesh.PoolID(), PeerID: s.mesh.ID().String()})
	s.leave()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorResponse{Error: "encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, errorResponse{Error: fmt.Sprintf(format, args...)})
}
