package node

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/weightcache"
)

// The weight cache's part of the control API:
//
//	GET  /v1/weights              []WeightsModel: local models and the pool's
//	GET  /v1/weights/path?ref=R   WeightsPath: the directory of a complete model
//	POST /v1/weights/add          WeightsAddRequest   → event stream
//	POST /v1/weights/fetch        WeightsFetchRequest → event stream
//	POST /v1/weights/pull         WeightsRefRequest   → event stream
//	POST /v1/weights/remove       WeightsRefRequest   → WeightsModel
//	POST /v1/weights/pin          WeightsRefRequest   → WeightsModel
//	POST /v1/weights/unpin        WeightsRefRequest   → WeightsModel
//
// An event stream is newline-delimited JSON WeightsEvents: progress events
// while the work runs, then one event with a result or an error. Errors
// found before the work starts are ordinary error statuses.

// Limits on what the weights endpoints accept.
const (
	maxWeightsBody  = 1 << 20
	maxOriginFiles  = 4096
	progressEvery   = 100 * time.Millisecond
	weightsNDJSON   = "application/x-ndjson"
	maxWeightsEvent = 1 << 20
)

// WeightsModel is one model in GET /v1/weights.
type WeightsModel struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// SizeBytes is the model's size (from a member's record when remote).
	SizeBytes int64 `json:"size_bytes"`
	// State is complete, partial (some chunks here) or remote (only other
	// members hold it).
	State weightcache.State `json:"state"`
	// Pins count holders that keep it from eviction here.
	Pins int `json:"pins"`
	// Peers is how many other alive members hold it complete.
	Peers    int        `json:"peers"`
	LastUsed *time.Time `json:"last_used,omitempty"`
}

// WeightsPath is GET /v1/weights/path.
type WeightsPath struct {
	ID   string `json:"id"`
	Path string `json:"path"`
}

// WeightsAddRequest imports a model from a file or directory the daemon
// can read.
type WeightsAddRequest struct {
	Path string `json:"path"` // absolute
	Name string `json:"name,omitempty"`
}

// WeightsOriginFile is one file of an origin fetch.
type WeightsOriginFile struct {
	URL    string `json:"url"`
	Path   string `json:"path"`             // inside the model
	SHA256 string `json:"sha256,omitempty"` // lowercase hex, when known
	Size   int64  `json:"size,omitempty"`   // bytes, when known
}

// WeightsFetchRequest downloads a model's first copy over HTTP(S).
type WeightsFetchRequest struct {
	Files []WeightsOriginFile `json:"files"`
	Name  string              `json:"name,omitempty"`
}

// WeightsRefRequest names a model by ID or name.
type WeightsRefRequest struct {
	Ref string `json:"ref"`
}

// WeightsEvent is one line of an event stream: exactly one field is set.
type WeightsEvent struct {
	Progress *WeightsProgress `json:"progress,omitempty"`
	Result   *WeightsResult   `json:"result,omitempty"`
	Error    string           `json:"error,omitempty"`
}

// WeightsProgress is a snapshot of a pull or an origin fetch.
type WeightsProgress struct {
	ID           string  `json:"id,omitempty"`
	DoneBytes    int64   `json:"done_bytes"`
	TotalBytes   int64   `json:"total_bytes"`
	FetchedBytes int64   `json:"fetched_bytes"`
	Peers        int     `json:"peers"`
	ElapsedSec   float64 `json:"elapsed_s"`
	RateBPS      float64 `json:"rate_bytes_per_s"`
	ETASec       float64 `json:"eta_s"`
}

// WeightsResult ends a successful add, fetch or pull.
type WeightsResult struct {
	ID        string            `json:"id"`
	Name      string            `json:"name,omitempty"`
	SizeBytes int64             `json:"size_bytes"`
	State     weightcache.State `json:"state"`
	// The rest describe a pull.
	FetchedBytes int64          `json:"fetched_bytes,omitempty"`
	ResumedBytes int64          `json:"resumed_bytes,omitempty"`
	WastedBytes  int64          `json:"wasted_bytes,omitempty"`
	Peers        int            `json:"peers,omitempty"`
	Banned       []string       `json:"banned,omitempty"`
	Transports   map[string]int `json:"transports,omitempty"`
	ElapsedSec   float64        `json:"elapsed_s"`
}

// register adds the weights endpoints to mux.
func (w *weights) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/weights", w.list)
	mux.HandleFunc("GET /v1/weights/path", w.path)
	mux.HandleFunc("POST /v1/weights/add", w.add)
	mux.HandleFunc("POST /v1/weights/fetch", w.fetchOrigin)
	mux.HandleFunc("POST /v1/weights/pull", w.pull)
	mux.HandleFunc("POST /v1/weights/verify", w.verify)
	mux.HandleFunc("POST /v1/weights/remove", w.refOp(w.store.Remove))
	mux.HandleFunc("POST /v1/weights/pin", w.refOp(w.store.Pin))
	mux.HandleFunc("POST /v1/weights/unpin", w.refOp(w.store.Unpin))
}

func (w *weights) list(rw http.ResponseWriter, r *http.Request) {
	writeJSON(rw, http.StatusOK, mergeModels(w.store.List(), w.mesh.Members()))
}

// mergeModels lists the local models (most recently used first) and then
// the ones only other members hold (by name, then ID), each with how many
// alive members hold it complete.
func mergeModels(local []weightcache.Info, ms []mesh.Member) []WeightsModel {
	type remote struct {
		ref   mesh.ModelRef
		peers int
	}
	pool := map[string]*remote{}
	for _, m := range ms {
		if m.Self || m.State != mesh.StateAlive || m.Record == nil {
			continue
		}
		for _, ref := range m.Record.Models {
			rm := pool[ref.ID]
			if rm == nil {
				rm = &remote{ref: ref}
				pool[ref.ID] = rm
			}
			if rm.ref.Name == "" {
				rm.ref.Name = ref.Name
			}
			rm.peers++
		}
	}
	out := []WeightsModel{}
	for _, in := range local {
		lu := in.LastUsed
		wm := WeightsModel{ID: in.ID, Name: in.Name, SizeBytes: in.SizeBytes, State: in.State, Pins: in.Pins, LastUsed: &lu}
		if rm := pool[in.ID]; rm != nil {
			wm.Peers = rm.peers
			if wm.Name == "" {
				wm.Name = rm.ref.Name
			}
			delete(pool, in.ID)
		}
		out = append(out, wm)
	}
	var rest []WeightsModel
	for _, rm := range pool {
		rest = append(rest, WeightsModel{ID: rm.ref.ID, Name: rm.ref.Name, SizeBytes: rm.ref.SizeBytes, State: weightcache.StateRemote, Peers: rm.peers})
	}
	sort.Slice(rest, func(i, j int) bool {
		if rest[i].Name != rest[j].Name {
			return rest[i].Name < rest[j].Name
		}
		return rest[i].ID < rest[j].ID
	})
	return append(out, rest...)
}

func (w *weights) path(rw http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		writeError(rw, http.StatusBadRequest, "missing ?ref=ID|NAME")
		return
	}
	id, err := w.store.Resolve(ref)
	if err != nil {
		writeWeightsError(rw, err, ref)
		return
	}
	dir, err := w.store.Path(id)
	if err != nil {
		writeWeightsError(rw, err, ref)
		return
	}
	writeJSON(rw, http.StatusOK, WeightsPath{ID: id, Path: dir})
}

// refOp serves remove, pin and unpin: op on a model this node knows.
func (w *weights) refOp(op func(ref string) error) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		var req WeightsRefRequest
		if err := decodeWeightsBody(r.Body, &req); err != nil {
			writeError(rw, http.StatusBadRequest, "%v", err)
			return
		}
		id, err := w.store.Resolve(req.Ref)
		if err != nil {
			writeWeightsError(rw, err, req.Ref)
			return
		}
		info, _ := w.store.Stat(id)
		if err := op(id); err != nil {
			writeWeightsError(rw, err, req.Ref)
			return
		}
		if after, err := w.store.Stat(id); err == nil {
			info = after
		}
		w.changed()
		lu := info.LastUsed
		writeJSON(rw, http.StatusOK, WeightsModel{ID: info.ID, Name: info.Name, SizeBytes: info.SizeBytes, State: info.State, Pins: info.Pins, LastUsed: &lu})
	}
}

func (w *weights) add(rw http.ResponseWriter, r *http.Request) {
	var req WeightsAddRequest
	if err := decodeWeightsBody(r.Body, &req); err != nil {
		writeError(rw, http.StatusBadRequest, "%v", err)
		return
	}
	if !filepath.IsAbs(req.Path) {
		writeError(rw, http.StatusBadRequest, "path %q is not absolute; the daemon reads it from its own working directory", req.Path)
		return
	}
	ev := startEvents(rw)
	start := time.Now()
	id, err := w.store.Add(r.Context(), req.Path, req.Name)
	if err != nil {
		ev.fail(fmt.Errorf("import %s: %w", req.Path, err))
		return
	}
	w.provide(r.Context(), id)
	w.changed()
	ev.done(w.result(id, start))
}

func (w *weights) fetchOrigin(rw http.ResponseWriter, r *http.Request) {
	var req WeightsFetchRequest
	if err := decodeWeightsBody(r.Body, &req); err != nil {
		writeError(rw, http.StatusBadRequest, "%v", err)
		return
	}
	if err := req.validate(); err != nil {
		writeError(rw, http.StatusBadRequest, "%v", err)
		return
	}
	or := weightcache.OriginRequest{Name: req.Name}
	for _, f := range req.Files {
		or.Files = append(or.Files, weightcache.OriginFile{URL: f.URL, Path: f.Path, SHA256: f.SHA256, Size: f.Size})
	}
	ev := startEvents(rw)
	start := time.Now()
	id, err := w.store.FetchOrigin(r.Context(), or, ev.progress)
	if err != nil {
		ev.fail(err)
		return
	}
	w.provide(r.Context(), id)
	w.changed()
	ev.done(w.result(id, start))
}

func (w *weights) pull(rw http.ResponseWriter, r *http.Request) {
	var req WeightsRefRequest
	if err := decodeWeightsBody(r.Body, &req); err != nil {
		writeError(rw, http.StatusBadRequest, "%v", err)
		return
	}
	id, name, err := w.resolvePool(req.Ref)
	if err != nil {
		writeWeightsError(rw, err, req.Ref)
		return
	}
	ev := startEvents(rw)
	start := time.Now()
	stats, err := w.fetch.Fetch(r.Context(), id, ev.progress)
	w.changed()
	if err != nil {
		ev.fail(fmt.Errorf("pull %s: %w", id, err))
		return
	}
	if name != "" {
		if info, err := w.store.Stat(id); err == nil && info.Name == "" {
			if err := w.store.SetName(name, id); err != nil {
				w.log.Warn("could not name pulled model", "id", id, "name", name, "err", err)
			}
		}
	}
	res := w.result(id, start)
	res.FetchedBytes, res.ResumedBytes, res.WastedBytes = stats.FetchedBytes, stats.ResumedBytes, stats.WastedBytes
	res.Peers, res.Transports = stats.Peers, stats.Transports
	for _, p := range stats.Banned {
		res.Banned = append(res.Banned, p.String())
	}
	ev.done(res)
}

func (w *weights) verify(rw http.ResponseWriter, r *http.Request) {
	var req WeightsRefRequest
	if err := decodeWeightsBody(r.Body, &req); err != nil {
		writeError(rw, http.StatusBadRequest, "%v", err)
		return
	}
	id, err := w.store.Resolve(req.Ref)
	if err == nil {
		var info weightcache.Info
		if info, err = w.store.Stat(id); err == nil && info.State != weightcache.StateComplete {
			err = fmt.Errorf("%w: %s", weightcache.ErrIncomplete, id)
		}
	}
	if err != nil {
		writeWeightsError(rw, err, req.Ref)
		return
	}
	ev := startEvents(rw)
	start := time.Now()
	if err := w.store.Verify(r.Context(), id, ev.progress); err != nil {
		if info, serr := w.store.Stat(id); serr == nil && info.State != weightcache.StateComplete {
			w.log.Error("a model failed verification on disk; it is partial now", "id", id, "err", err)
			w.changed()
			err = fmt.Errorf("%w; the model is partial now, and 'shoal weights pull %s' fetches what it lacks", err, req.Ref)
		}
		ev.fail(fmt.Errorf("verify %s: %w", id, err))
		return
	}
	ev.done(w.result(id, start))
}

// resolvePool maps ref to a model ID: an ID as it is, else a name this
// store knows, else a name in the alive members' records (unique). It
// returns the name the pool gives the model, if any.
func (w *weights) resolvePool(ref string) (id, name string, err error) {
	if ref == "" {
		return "", "", fmt.Errorf("%w: empty model reference", weightcache.ErrBadName)
	}
	ms := w.mesh.Members()
	if weightcache.CheckID(ref) == nil {
		return ref, recordName(ms, ref), nil
	}
	if id, err := w.store.Resolve(ref); err == nil {
		return id, "", nil
	}
	ids := map[string]bool{}
	for _, m := range ms {
		if m.Self || m.State != mesh.StateAlive || m.Record == nil {
			continue
		}
		for _, r := range m.Record.Models {
			if r.Name == ref {
				ids[r.ID] = true
			}
		}
	}
	switch len(ids) {
	case 0:
		return "", "", fmt.Errorf("%w: no model named %q here or in any member's record ('shoal weights ls' lists them)", weightcache.ErrNotFound, ref)
	case 1:
		for id := range ids {
			return id, ref, nil
		}
	}
	var list []string
	for id := range ids {
		list = append(list, id)
	}
	sort.Strings(list)
	return "", "", fmt.Errorf("%w: the name %q means %d models in the pool (%v); pull one by ID", errAmbiguous, ref, len(list), list)
}

// errAmbiguous: a name that members map to different models.
var errAmbiguous = errors.New("node: ambiguous model name")

// recordName is the name some alive member gives model id, or "".
func recordName(ms []mesh.Member, id string) string {
	for _, m := range ms {
		if m.Self || m.State != mesh.StateAlive || m.Record == nil {
			continue
		}
		for _, r := range m.Record.Models {
			if r.ID == id && r.Name != "" {
				return r.Name
			}
		}
	}
	return ""
}

func (w *weights) result(id string, start time.Time) *WeightsResult {
	res := &WeightsResult{ID: id, ElapsedSec: time.Since(start).Seconds()}
	if info, err := w.store.Stat(id); err == nil {
		res.Name, res.SizeBytes, res.State = info.Name, info.SizeBytes, info.State
	}
	return res
}

// writeWeightsError maps weight cache errors to statuses.
func writeWeightsError(rw http.ResponseWriter, err error, ref string) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, weightcache.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, weightcache.ErrBadName), errors.Is(err, weightcache.ErrBadID), errors.Is(err, weightcache.ErrUnsafePath):
		code = http.StatusBadRequest
	case errors.Is(err, weightcache.ErrPinned), errors.Is(err, weightcache.ErrBusy), errors.Is(err, errAmbiguous):
		code = http.StatusConflict
	case errors.Is(err, weightcache.ErrIncomplete):
		writeError(rw, http.StatusConflict, "%v; run 'shoal weights pull %s' first", err, ref)
		return
	case errors.Is(err, weightcache.ErrCacheFull), errors.Is(err, weightcache.ErrDiskFull):
		code = http.StatusInsufficientStorage
	}
	writeError(rw, code, "%v", err)
}

// decodeWeightsBody decodes one JSON value of at most maxWeightsBody
// bytes, refusing unknown fields and trailing data.
func decodeWeightsBody(r io.Reader, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, maxWeightsBody+1))
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if len(b) > maxWeightsBody {
		return fmt.Errorf("request body over %d bytes", maxWeightsBody)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	if dec.More() {
		return errors.New("bad request body: trailing data")
	}
	return nil
}

// validate checks an origin fetch and fills each file's path from its URL
// when empty.
func (req *WeightsFetchRequest) validate() error {
	if len(req.Files) == 0 {
		return errors.New("an origin fetch needs at least one file URL")
	}
	if len(req.Files) > maxOriginFiles {
		return fmt.Errorf("%d files; at most %d in one fetch", len(req.Files), maxOriginFiles)
	}
	for i := range req.Files {
		f := &req.Files[i]
		u, err := url.Parse(f.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("file %d: %q is not an http(s) URL", i, f.URL)
		}
		if f.Path == "" {
			f.Path = path.Base(u.Path)
			if f.Path == "/" || f.Path == "." {
				return fmt.Errorf("file %d: URL %q names no file; give its path", i, f.URL)
			}
		}
		if f.SHA256 != "" {
			if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != 32 || hex.EncodeToString(b) != f.SHA256 {
				return fmt.Errorf("file %d: sha256 %q is not 64 lowercase hex digits", i, f.SHA256)
			}
		}
		if f.Size < 0 {
			return fmt.Errorf("file %d: size %d < 0", i, f.Size)
		}
	}
	return nil
}

// events writes an event stream: progress at most every progressEvery,
// then one result or error. Safe for the fetch's goroutines.
type events struct {
	mu   sync.Mutex
	rw   http.ResponseWriter
	rc   *http.ResponseController
	last time.Time
	dead bool
}

func startEvents(rw http.ResponseWriter) *events {
	rw.Header().Set("Content-Type", weightsNDJSON)
	rw.WriteHeader(http.StatusOK)
	e := &events{rw: rw, rc: http.NewResponseController(rw)}
	_ = e.rc.Flush()
	return e
}

func (e *events) progress(p weightcache.Progress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if now.Sub(e.last) < progressEvery && p.DoneBytes < p.TotalBytes {
		return
	}
	e.last = now
	e.writeLocked(WeightsEvent{Progress: &WeightsProgress{
		ID: p.ID, DoneBytes: p.DoneBytes, TotalBytes: p.TotalBytes, FetchedBytes: p.FetchedBytes,
		Peers: p.Peers, ElapsedSec: p.Elapsed.Seconds(), RateBPS: p.Rate(), ETASec: p.ETA().Seconds(),
	}})
}

func (e *events) done(res *WeightsResult) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writeLocked(WeightsEvent{Result: res})
}

func (e *events) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writeLocked(WeightsEvent{Error: err.Error()})
}

func (e *events) writeLocked(ev WeightsEvent) {
	if e.dead {
		return
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if _, err := e.rw.Write(append(b, '\n')); err != nil {
		e.dead = true // the client went away; the request's context ends the work
		return
	}
	_ = e.rc.Flush()
}

// ReadWeightsEvents reads an event stream, calling progress for each
// progress event, and returns the result, or the error the stream ends
// with. A stream that ends without either is an error.
func ReadWeightsEvents(r io.Reader, progress func(WeightsProgress)) (*WeightsResult, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxWeightsEvent)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev WeightsEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("%w: reading the daemon's progress: %v", ErrAPI, err)
		}
		switch {
		case ev.Error != "":
			return nil, &APIError{StatusCode: http.StatusOK, Message: ev.Error}
		case ev.Result != nil:
			if ev.Result.ID == "" {
				return nil, fmt.Errorf("%w: result without a model ID", ErrAPI)
			}
			return ev.Result, nil
		case ev.Progress != nil:
			if progress != nil {
				progress(*ev.Progress)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading the daemon's progress: %v", ErrAPI, err)
	}
	return nil, fmt.Errorf("%w: the daemon ended the answer without a result", ErrAPI)
}
