package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Errors of the gateway. Callers test with errors.Is.
var (
	ErrConfig        = errors.New("gateway: invalid config")
	ErrUnknownModel  = errors.New("gateway: model not found")
	ErrQueueFull     = errors.New("gateway: too many requests waiting")
	ErrQueueTimeout  = errors.New("gateway: no replica became ready in time")
	ErrNoRoute       = errors.New("gateway: no way to the replica")
	ErrBadRequest    = errors.New("gateway: bad request")
	ErrTooLarge      = errors.New("gateway: request body too large")
	ErrUnauthorized  = errors.New("gateway: missing or wrong API key")
	ErrNotLocal      = errors.New("gateway: no such replica on this node")
	ErrClientGone    = errors.New("gateway: client went away")
	errNotFoundRoute = errors.New("gateway: no such route")
)

// OpenAI's error types and the codes this gateway answers with.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuth           = "authentication_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
)

// apiError is an error in OpenAI's format with its HTTP status.
type apiError struct {
	status     int
	typ, code  string
	msg        string
	retryAfter time.Duration
}

type errorBody struct {
	Error errorObject `json:"error"`
}

type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

func (e apiError) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(e.status)
	b, _ := json.Marshal(errorBody{Error: errorObject{Message: e.msg, Type: e.typ, Code: e.code}})
	_, _ = w.Write(append(b, '\n'))
}
