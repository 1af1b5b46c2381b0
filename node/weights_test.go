package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
	"github.com/shoalmesh/shoal/weightcache"
)

// Two real mesh nodes on loopback, each with the daemon's weight cache and
// its control endpoints: an import on one is listed remote, by name, on
// the other, pulled with progress events, and lands byte-identical; pins
// guard removal.
func TestWeightsAPIAcrossTwoNodes(t *testing.T) {
	nodes := meshtest.Pool(t, 2, nil)
	var ws []*weights
	var hs []http.Handler
	for _, n := range nodes {
		w, err := startWeights(t.TempDir(), 0, n, "127.0.0.1:0", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.close)
		mux := http.NewServeMux()
		w.register(mux)
		ws, hs = append(ws, w), append(hs, mux)
	}
	src := t.TempDir()
	data := bytes.Repeat([]byte("weights!"), 1<<20) // 8 MiB: two chunks and a bit
	data = append(data, "tail"...)
	if err := os.WriteFile(filepath.Join(src, "model.safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "config.json"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}

	res := streamCall(t, hs[0], "/v1/weights/add", WeightsAddRequest{Path: src, Name: "tiny"}, nil)
	if res.State != weightcache.StateComplete || res.Name != "tiny" || res.SizeBytes != int64(len(data))+2 {
		t.Fatalf("add = %+v; want complete tiny of %d bytes", res, len(data)+2)
	}
	id := res.ID

	// The name reaches the other node through node 0's record.
	var listed []WeightsModel
	ok := meshtest.Eventually(10*time.Second, func() bool {
		listed = nil
		getJSON(t, hs[1], "/v1/weights", http.StatusOK, &listed)
		return len(listed) == 1 && listed[0].ID == id && listed[0].State == weightcache.StateRemote && listed[0].Name == "tiny" && listed[0].Peers == 1
	})
	if !ok {
		t.Fatalf("node 1 lists %+v; want %s remote as tiny with 1 peer", listed, id)
	}

	var events int
	pulled := streamCall(t, hs[1], "/v1/weights/pull", WeightsRefRequest{Ref: "tiny"}, func(WeightsProgress) { events++ })
	if pulled.ID != id || pulled.State != weightcache.StateComplete || pulled.Name != "tiny" || pulled.FetchedBytes < pulled.SizeBytes {
		t.Fatalf("pull = %+v; want %s complete as tiny, every byte fetched", pulled, id)
	}
	if events == 0 {
		t.Errorf("pull sent no progress events")
	}
	var p WeightsPath
	getJSON(t, hs[1], "/v1/weights/path?ref=tiny", http.StatusOK, &p)
	got, err := os.ReadFile(filepath.Join(p.Path, "model.safetensors"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("pulled model.safetensors: %d bytes, err %v; want the %d source bytes", len(got), err, len(data))
	}

	// Pins guard removal; unknown models are 404; bad bodies 400.
	call(t, hs[1], "/v1/weights/pin", WeightsRefRequest{Ref: id}, http.StatusOK)
	call(t, hs[1], "/v1/weights/remove", WeightsRefRequest{Ref: "tiny"}, http.StatusConflict)
	call(t, hs[1], "/v1/weights/unpin", WeightsRefRequest{Ref: "tiny"}, http.StatusOK)
	call(t, hs[1], "/v1/weights/remove", WeightsRefRequest{Ref: "tiny"}, http.StatusOK)
	call(t, hs[1], "/v1/weights/remove", WeightsRefRequest{Ref: "tiny"}, http.StatusNotFound)
	call(t, hs[1], "/v1/weights/pull", WeightsRefRequest{Ref: "nothing-by-this-name"}, http.StatusNotFound)
	call(t, hs[1], "/v1/weights/add", WeightsAddRequest{Path: "relative/dir"}, http.StatusBadRequest)
	call(t, hs[1], "/v1/weights/pin", map[string]string{"reff": "x"}, http.StatusBadRequest)
	getJSON(t, hs[1], "/v1/weights/path?ref="+id, http.StatusNotFound, nil)

	// The record carries the complete model, named.
	ok = meshtest.Eventually(5*time.Second, func() bool {
		for _, m := range nodes[1].Members() {
			if m.PeerID == nodes[0].ID() && m.Record != nil {
				return len(m.Record.Models) == 1 && m.Record.Models[0] == mesh.ModelRef{ID: id, Name: "tiny", SizeBytes: res.SizeBytes}
			}
		}
		return false
	})
	if !ok {
		t.Errorf("node 0's record as node 1 sees it does not list %s as tiny", id)
	}
	_ = ws
}

func streamCall(t *testing.T, h http.Handler, path string, body any, progress func(WeightsProgress)) *WeightsResult {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, newJSONRequest(t, path, body))
	if rec.Code != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, rec.Code, rec.Body)
	}
	res, err := ReadWeightsEvents(rec.Body, progress)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return res
}

func call(t *testing.T, h http.Handler, path string, body any, want int) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, newJSONRequest(t, path, body))
	if rec.Code != want {
		t.Errorf("POST %s %+v = %d %s; want %d", path, body, rec.Code, strings.TrimSpace(rec.Body.String()), want)
	}
}

func getJSON(t *testing.T, h http.Handler, path string, want int, out any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != want {
		t.Fatalf("GET %s = %d %s; want %d", path, rec.Code, rec.Body, want)
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
}

func newJSONRequest(t *testing.T, path string, body any) *http.Request {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return httptest.NewRequest(http.MethodPost, path, bytes.NewReader(b))
}

func TestMergeModels(t *testing.T) {
	rec := func(ms ...mesh.ModelRef) *mesh.Record { return &mesh.Record{Models: ms} }
	members := []mesh.Member{
		{PeerID: "self", Self: true, State: mesh.StateAlive, Record: rec(mesh.ModelRef{ID: "L"})},
		{PeerID: "a", State: mesh.StateAlive, Record: rec(mesh.ModelRef{ID: "L", Name: "local"}, mesh.ModelRef{ID: "R2", Name: "zeta", SizeBytes: 9})},
		{PeerID: "b", State: mesh.StateAlive, Record: rec(mesh.ModelRef{ID: "R2", Name: "zeta", SizeBytes: 9}, mesh.ModelRef{ID: "R1", Name: "alpha"})},
		{PeerID: "c", State: mesh.StateDead, Record: rec(mesh.ModelRef{ID: "R3"})},
	}
	got := mergeModels([]weightcache.Info{{ID: "L", SizeBytes: 5, State: weightcache.StateComplete}}, members)
	type row struct {
		id, name string
		state    weightcache.State
		peers    int
		size     int64
	}
	var rows []row
	for _, m := range got {
		rows = append(rows, row{m.ID, m.Name, m.State, m.Peers, m.SizeBytes})
	}
	want := []row{{"L", "local", "complete", 1, 5}, {"R1", "alpha", "remote", 1, 0}, {"R2", "zeta", "remote", 2, 9}}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("mergeModels = %v; want %v", rows, want)
	}
}

func TestRecordModelsBounded(t *testing.T) {
	var infos []weightcache.Info
	for i := 0; i < mesh.MaxRecordModels+10; i++ {
		infos = append(infos, weightcache.Info{ID: fmt.Sprint(i), State: weightcache.StateComplete})
	}
	infos = append([]weightcache.Info{{ID: "p", State: weightcache.StatePartial}}, infos...)
	got := recordModels(infos)
	if len(got) != mesh.MaxRecordModels || got[0].ID != "0" {
		t.Errorf("recordModels kept %d, first %v; want %d complete ones, most recent first", len(got), got[0], mesh.MaxRecordModels)
	}
}

func TestFetchRequestValidate(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	cases := []struct {
		req     WeightsFetchRequest
		ok      bool
		wantPth string
	}{
		{WeightsFetchRequest{Files: []WeightsOriginFile{{URL: "https://h/x/model.bin", SHA256: sum}}}, true, "model.bin"},
		{WeightsFetchRequest{Files: []WeightsOriginFile{{URL: "http://h/a", Path: "dir/a"}}}, true, "dir/a"},
		{WeightsFetchRequest{}, false, ""},
		{WeightsFetchRequest{Files: []WeightsOriginFile{{URL: "ftp://h/a"}}}, false, ""},
		{WeightsFetchRequest{Files: []WeightsOriginFile{{URL: "https://h/"}}}, false, ""},
		{WeightsFetchRequest{Files: []WeightsOriginFile{{URL: "https://h/a", SHA256: strings.ToUpper(sum)}}}, false, ""},
		{WeightsFetchRequest{Files: []WeightsOriginFile{{URL: "https://h/a", Size: -1}}}, false, ""},
	}
	for _, c := range cases {
		err := c.req.validate()
		if (err == nil) != c.ok {
			t.Errorf("validate(%+v) = %v; want ok %v", c.req, err, c.ok)
			continue
		}
		if c.ok && c.req.Files[0].Path != c.wantPth {
			t.Errorf("validate(%+v) path %q; want %q", c.req, c.req.Files[0].Path, c.wantPth)
		}
	}
}

func TestReadWeightsEvents(t *testing.T) {
	cases := []struct {
		in      string
		wantID  string
		wantErr error
		events  int
	}{
		{`{"progress":{"done_bytes":1,"total_bytes":2}}` + "\n" + `{"result":{"id":"x","state":"complete"}}` + "\n", "x", nil, 1},
		{`{"progress":{}}` + "\n" + `{"error":"weightcache: no providers"}` + "\n", "", ErrAPI, 1},
		{`{"progress":{}}` + "\n", "", ErrAPI, 1},
		{`{"result":{}}`, "", ErrAPI, 0},
		{`not json`, "", ErrAPI, 0},
		{"", "", ErrAPI, 0},
	}
	for _, c := range cases {
		n := 0
		res, err := ReadWeightsEvents(strings.NewReader(c.in), func(WeightsProgress) { n++ })
		if !errors.Is(err, c.wantErr) || (err == nil && res.ID != c.wantID) || n != c.events {
			t.Errorf("ReadWeightsEvents(%q) = %+v, %v, %d events; want id %q, err %v, %d events", c.in, res, err, n, c.wantID, c.wantErr, c.events)
		}
	}
}

// FuzzWeightsEvents: the CLI's reader of the daemon's event stream never
// panics, and returns a result only with an ID.
func FuzzWeightsEvents(f *testing.F) {
	f.Add([]byte(`{"progress":{"done_bytes":1}}` + "\n" + `{"result":{"id":"x"}}` + "\n"))
	f.Add([]byte(`{"error":"boom"}`))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ReadWeightsEvents(bytes.NewReader(b), func(WeightsProgress) {})
		if err == nil && (res == nil || res.ID == "") {
			t.Fatalf("result %+v without error or ID", res)
		}
	})
}

// FuzzWeightsRequest: the control socket's decoder of weights requests
// never panics, and a fetch request it accepts validates to http(s) URLs
// and relative file paths.
func FuzzWeightsRequest(f *testing.F) {
	f.Add([]byte(`{"files":[{"url":"https://h/a/b.bin","sha256":""}],"name":"m"}`))
	f.Add([]byte(`{"ref":"x"}`))
	f.Add([]byte(`{"path":"/a","name":"b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ref WeightsRefRequest
		_ = decodeWeightsBody(bytes.NewReader(b), &ref)
		var add WeightsAddRequest
		_ = decodeWeightsBody(bytes.NewReader(b), &add)
		var req WeightsFetchRequest
		if decodeWeightsBody(bytes.NewReader(b), &req) != nil || req.validate() != nil {
			return
		}
		for _, f := range req.Files {
			u, err := url.Parse(f.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || f.Path == "" {
				t.Fatalf("accepted %+v", f)
			}
		}
	})
}

func TestBulkListenAddr(t *testing.T) {
	for _, c := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"/ip4/0.0.0.0/udp/4242/quic-v1", "/ip4/0.0.0.0/tcp/4242"}, "0.0.0.0:4243"},
		{[]string{"/ip4/127.0.0.1/tcp/0"}, "127.0.0.1:0"},
		{[]string{"/ip6/::1/tcp/7000"}, "[::1]:7001"},
		{[]string{"/ip4/10.0.0.1/tcp/65535"}, "10.0.0.1:0"},
		{[]string{"/ip4/10.0.0.1/tcp/80/ws", "/ip4/10.0.0.2/tcp/90"}, "10.0.0.2:91"},
		{[]string{"/ip4/0.0.0.0/udp/4242/quic-v1"}, ""},
	} {
		var ms []multiaddr.Multiaddr
		for _, a := range c.addrs {
			ms = append(ms, multiaddr.StringCast(a))
		}
		if got := bulkListenAddr(ms); got != c.want {
			t.Errorf("bulkListenAddr(%v) = %q; want %q", c.addrs, got, c.want)
		}
	}
}
