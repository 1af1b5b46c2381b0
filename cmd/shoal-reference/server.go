package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Limits on a request.
const (
	defaultMaxTokens = 16
	maxMaxTokens     = 4096
	maxBodyBytes     = 1 << 20
)

type server struct {
	m         *Model
	name      string // served model id
	vramLimit int64  // MiB, 0: none
	created   int64  // unix seconds, reported in /v1/models
	seq       atomic.Uint64
}

func newServer(m *Model, name string, vramLimitMiB int64) http.Handler {
	s := &server{m: m, name: name, vramLimit: vramLimitMiB, created: time.Now().Unix()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "not_found",
			fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status":         "ok",
		"model":          s.name,
		"weights_sha256": fmt.Sprintf("%x", s.m.WeightsSHA256),
		"vram_limit_mib": s.vramLimit,
	})
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []modelObject{{ID: s.name, Object: "model", Created: s.created, OwnedBy: "shoal"}},
	})
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model     string        `json:"model"`
	Messages  []chatMessage `json:"messages"`
	MaxTokens *int          `json:"max_tokens"`
	// max_completion_tokens is the newer name of max_tokens.
	MaxCompletionTokens *int `json:"max_completion_tokens"`
	Stream              bool `json:"stream"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (s *server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "request body is not valid JSON: "+err.Error())
		return
	}
	if req.Model != s.name {
		writeError(w, http.StatusNotFound, "invalid_request_error", "model_not_found",
			fmt.Sprintf("the model %q does not exist; this server serves %q", req.Model, s.name))
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_value", "messages must hold at least one message")
		return
	}
	n := defaultMaxTokens
	for _, p := range []*int{req.MaxTokens, req.MaxCompletionTokens} {
		if p != nil {
			n = *p
		}
	}
	if n < 1 || n > maxMaxTokens {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_value",
			fmt.Sprintf("max_tokens must be between 1 and %d, got %d", maxMaxTokens, n))
		return
	}
	var prompt strings.Builder
	for _, m := range req.Messages {
		fmt.Fprintf(&prompt, "%s: %s\n", m.Role, m.Content)
	}
	words := s.m.Complete(prompt.String(), n)
	u := usage{PromptTokens: len(strings.Fields(prompt.String())), CompletionTokens: n}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	id := fmt.Sprintf("chatcmpl-%d", s.seq.Add(1))
	created := time.Now().Unix()
	if req.Stream {
		s.stream(w, id, created, words, u)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      id,
		"object":  "chat.completion",
		"created": created,
		"model":   s.name,
		"choices": []map[string]any{{
			"index":         0,
			"message":       chatMessage{Role: "assistant", Content: strings.Join(words, " ")},
			"finish_reason": "length",
		}},
		"usage": u,
	})
}

// stream answers as server-sent events: a role chunk, one chunk per word, a
// chunk with the finish reason and usage, then [DONE].
func (s *server) stream(w http.ResponseWriter, id string, created int64, words []string, u usage) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	send := func(delta map[string]any, finish any, withUsage bool) bool {
		chunk := map[string]any{
			"id":      id,
			"object":  "chat.completion.chunk",
			"created": created,
			"model":   s.name,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}},
		}
		if withUsage {
			chunk["usage"] = u
		}
		b, _ := json.Marshal(chunk)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return true
	}
	if !send(map[string]any{"role": "assistant", "content": ""}, nil, false) {
		return
	}
	for i, word := range words {
		if i > 0 {
			word = " " + word
		}
		if !send(map[string]any{"content": word}, nil, false) {
			return
		}
	}
	if !send(map[string]any{}, "length", true) {
		return
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

// writeError answers in OpenAI's error format.
func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code, "param": nil}})
}
