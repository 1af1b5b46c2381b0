package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

var (
	errMethod   = errors.New("gateway: method not allowed")
	errUpstream = errors.New("gateway: replica failed")
)

// fail answers err in OpenAI's format.
func (g *Gateway) fail(w http.ResponseWriter, dep string, err error) {
	if errors.Is(err, ErrClientGone) {
		return
	}
	e := apiError{status: http.StatusInternalServerError, typ: typeServer, code: "internal_error", msg: err.Error()}
	switch {
	case errors.Is(err, ErrUnauthorized):
		e.status, e.typ, e.code = http.StatusUnauthorized, typeAuth, "invalid_api_key"
	case errors.Is(err, ErrTooLarge):
		e.status, e.typ, e.code = http.StatusRequestEntityTooLarge, typeInvalidRequest, "request_too_large"
	case errors.Is(err, ErrBadRequest):
		e.status, e.typ, e.code = http.StatusBadRequest, typeInvalidRequest, "invalid_request"
	case errors.Is(err, ErrUnknownModel):
		e.status, e.typ, e.code = http.StatusNotFound, typeInvalidRequest, "model_not_found"
	case errors.Is(err, errNotFoundRoute):
		e.status, e.typ, e.code = http.StatusNotFound, typeInvalidRequest, "not_found"
	case errors.Is(err, errMethod):
		e.status, e.typ, e.code = http.StatusMethodNotAllowed, typeInvalidRequest, "method_not_allowed"
	case errors.Is(err, ErrQueueFull):
		e.status, e.typ, e.code, e.retryAfter = http.StatusTooManyRequests, typeRateLimit, "queue_full", g.cfg.RetryAfterFull
	case errors.Is(err, ErrQueueTimeout):
		e.status, e.code, e.retryAfter = http.StatusServiceUnavailable, "no_replica_ready", g.cfg.RetryAfterCold
	case errors.Is(err, ErrNoRoute), errors.Is(err, ErrNotLocal):
		e.status, e.code, e.retryAfter = http.StatusServiceUnavailable, "replica_unavailable", g.cfg.RetryAfterCold
	case errors.Is(err, errUpstream):
		e.status, e.code = http.StatusBadGateway, "bad_gateway"
	}
	if e.status >= 500 {
		g.cfg.Logger.Debug("gateway: request failed", "deployment", dep, "status", e.status, "err", err)
	}
	e.write(w)
}

// unknown is the error for a model nobody serves, listing those served.
func (g *Gateway) unknown(model string) error {
	served := g.cfg.Directory.Deployments()
	if len(served) == 0 {
		return fmt.Errorf("%w: %q; this pool serves no models", ErrUnknownModel, model)
	}
	const maxListed = 20
	list := served
	more := ""
	if len(list) > maxListed {
		list, more = list[:maxListed], fmt.Sprintf(" and %d more", len(served)-maxListed)
	}
	return fmt.Errorf("%w: %q; served models: %s%s", ErrUnknownModel, model, strings.Join(list, ", "), more)
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// models answers /v1/models (one == "") or /v1/models/ONE.
func (g *Gateway) models(w http.ResponseWriter, one string) {
	names := g.cfg.Directory.Deployments()
	var body any
	if one != "" {
		found := false
		for _, n := range names {
			found = found || n == one
		}
		if !found {
			g.fail(w, "", g.unknown(one))
			return
		}
		body = modelObject{ID: one, Object: "model", OwnedBy: "shoal"}
	} else {
		data := make([]modelObject, len(names))
		for i, n := range names {
			data[i] = modelObject{ID: n, Object: "model", OwnedBy: "shoal"}
		}
		body = struct {
			Object string        `json:"object"`
			Data   []modelObject `json:"data"`
		}{"list", data}
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

// readModel reads r's body (at most max bytes) and returns its "model"
// field. The body is put back, replayable, for forwarding.
func readModel(w http.ResponseWriter, r *http.Request, max int64) (string, error) {
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= max {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max))
	_ = r.Body.Close()
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return "", fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
		}
		return "", fmt.Errorf("%w: reading body: %v", ErrBadRequest, err)
	}
	body := buf.Bytes()
	model, err := ModelOf(body)
	if err != nil {
		return "", err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", fmt.Sprint(len(body)))
	return model, nil
}

// ModelOf returns the "model" field of an OpenAI request body: a JSON
// object whose "model" is a non-empty string. Anything else is
// ErrBadRequest.
func ModelOf(body []byte) (string, error) {
	var req struct {
		Model *string `json:"model"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "model" {
			return "", fmt.Errorf("%w: \"model\" must be a string", ErrBadRequest)
		}
		return "", fmt.Errorf("%w: body is not a JSON object: %v", ErrBadRequest, err)
	}
	if req.Model == nil || *req.Model == "" {
		return "", fmt.Errorf("%w: body has no \"model\"", ErrBadRequest)
	}
	return *req.Model, nil
}
