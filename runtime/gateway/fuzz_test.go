package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func FuzzModelOf(f *testing.F) {
	for _, s := range []string{
		`{"model":"tiny","messages":[]}`, `{"model":""}`, `{"model":7}`, `{"model":null}`, `[]`, `null`,
		`{"model":"a\u0000b"}`, `{"model":"x","model":"y"}`, `{`, ``, `"model"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ModelOf(body)
		if err != nil {
			return
		}
		if m == "" || !json.Valid(body) {
			t.Fatalf("ModelOf(%q) = %q; want an error for an empty model or invalid JSON", body, m)
		}
	})
}

// staticDirectory serves fixed replicas (gatewaytest imports this package).
type staticDirectory map[string][]Replica

func (d staticDirectory) Lookup(dep string) ([]Replica, <-chan struct{}, bool) {
	rs, ok := d[dep]
	return rs, nil, ok
}

func (d staticDirectory) Deployments() []string { return []string{"tiny"} }

// FuzzReadForwardedRequest feeds arbitrary bytes, as another gateway would
// send them over ProtocolID, to the receiving side: it must never reach an
// endpoint of a replica on another node, whatever the headers say.
func FuzzReadForwardedRequest(f *testing.F) {
	var trapped, served atomic.Int64
	trap := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { trapped.Add(1) }))
	defer trap.Close()
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	defer local.Close()
	g, err := New(Config{Self: "self", Directory: staticDirectory{
		"tiny":  {{ID: "l1", Deployment: "tiny", Node: "self", Endpoint: local.URL}, {ID: "r1", Deployment: "tiny", Node: "other", Endpoint: trap.URL}},
		"other": {{ID: "r2", Deployment: "other", Node: "other", Endpoint: trap.URL}},
	}})
	if err != nil {
		f.Fatal(err)
	}
	defer g.Close()
	for _, s := range []string{
		"GET /x HTTP/1.1\r\nHost: a\r\nShoal-Deployment: tiny\r\nShoal-Replica: r1\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nShoal-Deployment: tiny\r\nContent-Length: 2\r\n\r\n{}",
		"GET http://" + trap.Listener.Addr().String() + "/ HTTP/1.1\r\nHost: " + trap.Listener.Addr().String() + "\r\nShoal-Deployment: other\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT " + trap.Listener.Addr().String() + " HTTP/1.1\r\nShoal-Deployment: tiny\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		g.serveForwarded(rec, req)
		if n := trapped.Load(); n != 0 {
			t.Fatalf("request %q reached another node's replica endpoint", raw)
		}
	})
}
