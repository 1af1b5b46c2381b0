package weightcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hfServer serves files under /<org>/<model>/resolve/<rev>/<path>, with
// Range support, and records the requests it saw.
type hfServer struct {
	files map[string][]byte
	mu    sync.Mutex
	reqs  []string // "path range"
	// mangle, when set, may change what a request gets; it returns true
	// when it wrote the answer itself.
	mangle func(w http.ResponseWriter, r *http.Request, path string, n int) bool
}

func (h *hfServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const prefix = "/org/model/resolve/main/"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		http.NotFound(w, r)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, prefix)
	h.mu.Lock()
	h.reqs = append(h.reqs, p+" "+r.Header.Get("Range"))
	n := len(h.reqs)
	h.mu.Unlock()
	b, ok := h.files[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if h.mangle != nil && h.mangle(w, r, p, n) {
		return
	}
	http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(b))
}

func (h *hfServer) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.reqs...)
}

func originFiles(t *testing.T) map[string][]byte {
	return map[string][]byte{
		"config.json":        []byte(`{"model_type":"llama"}`),
		"model.safetensors":  randBytes(21, 5*minChunkSize+123),
		"sub/tokenizer.json": randBytes(22, 777),
	}
}

func hfRequest(base string, files map[string][]byte, withSHA bool) OriginRequest {
	paths := []string{"config.json", "model.safetensors", "sub/tokenizer.json"}
	of := HFFiles(base+"/org/model", "main", paths...)
	for i := range of {
		if withSHA {
			of[i].SHA256 = sha(files[of[i].Path])
			of[i].Size = int64(len(files[of[i].Path]))
		}
	}
	return OriginRequest{Files: of, Name: "org/model"}
}

func TestFetchOriginHFLayout(t *testing.T) {
	files := originFiles(t)
	srv := &hfServer{files: files}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	s := newStore(t, 0)
	var last Progress
	id, err := s.FetchOrigin(context.Background(), hfRequest(ts.URL, files, true), func(p Progress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	dir, err := s.Path("org/model")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range files {
		if got, _ := os.ReadFile(filepath.Join(dir, p)); !bytes.Equal(got, want) {
			t.Fatalf("%s differs", p)
		}
	}
	if last.DoneBytes != last.TotalBytes || last.TotalBytes == 0 {
		t.Fatalf("last progress %+v", last)
	}
	// Importing the same bytes locally gives the same ID: origin and Add agree.
	src := t.TempDir()
	for p, b := range files {
		writeFile(t, filepath.Join(src, p), b)
	}
	if id2, err := s.Add(context.Background(), src, ""); err != nil || id2 != id {
		t.Fatalf("Add of the same files = %s, %v; want %s", id2, err, id)
	}
	// Without expected hashes it works too (the origin is trusted once).
	s2 := newStore(t, 0)
	if id3, err := s2.FetchOrigin(context.Background(), hfRequest(ts.URL, files, false), nil); err != nil || id3 != id {
		t.Fatalf("without hashes: %s, %v; want %s", id3, err, id)
	}
}

func TestFetchOriginResumesAfterTruncation(t *testing.T) {
	files := originFiles(t)
	big := files["model.safetensors"]
	srv := &hfServer{files: files}
	cut := len(big) / 2
	srv.mangle = func(w http.ResponseWriter, r *http.Request, p string, n int) bool {
		if p != "model.safetensors" || r.Header.Get("Range") != "" {
			return false
		}
		// Promise everything, send half, drop the connection.
		w.Header().Set("Content-Length", itoa(len(big)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(big[:cut])
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return true
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	s := newStore(t, 0)
	if _, err := s.FetchOrigin(context.Background(), hfRequest(ts.URL, files, true), nil); err != nil {
		t.Fatal(err)
	}
	var ranged string
	for _, r := range srv.requests() {
		if strings.HasPrefix(r, "model.safetensors bytes=") {
			ranged = r
		}
	}
	if ranged == "" {
		t.Fatalf("no Range request after truncation; requests %q", srv.requests())
	}
	off := strings.TrimSuffix(strings.TrimPrefix(ranged, "model.safetensors bytes="), "-")
	if off == "0" || atoi(off) > cut {
		t.Fatalf("resumed at %s; want (0, %d]", off, cut)
	}
	dir, _ := s.Path("org/model")
	if got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors")); !bytes.Equal(got, big) {
		t.Fatal("resumed file differs")
	}
}

func TestFetchOriginRejects(t *testing.T) {
	files := originFiles(t)
	cases := []struct {
		name   string
		mangle func(w http.ResponseWriter, r *http.Request, p string, n int) bool
		hook   func(n int) error
		want   error
	}{
		{"corrupt", func(w http.ResponseWriter, r *http.Request, p string, n int) bool {
			if p != "model.safetensors" {
				return false
			}
			b := append([]byte(nil), files[p]...)
			b[1000] ^= 1
			http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(b))
			return true
		}, nil, ErrHashMismatch},
		{"too long", func(w http.ResponseWriter, r *http.Request, p string, n int) bool {
			if p != "config.json" {
				return false
			}
			_, _ = w.Write(append(append([]byte(nil), files[p]...), "extra"...))
			return true
		}, nil, ErrSizeMismatch},
		{"missing", func(w http.ResponseWriter, r *http.Request, p string, n int) bool {
			http.NotFound(w, r)
			return true
		}, nil, ErrOrigin},
		{"disk full", nil, func(n int) error { return syscall.ENOSPC }, ErrDiskFull},
	}
	for _, c := range cases {
		srv := &hfServer{files: files, mangle: c.mangle}
		ts := httptest.NewServer(srv)
		s := newStore(t, 0)
		s.SetWriteHook(c.hook)
		_, err := s.FetchOrigin(context.Background(), hfRequest(ts.URL, files, true), nil)
		ts.Close()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: FetchOrigin = %v; want %v", c.name, err, c.want)
			continue
		}
		if _, err := s.Resolve("org/model"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: model registered after a failed fetch", c.name)
		}
		if c.name == "missing" && len(srv.requests()) != 1 {
			t.Errorf("404 retried: %q", srv.requests())
		}
		ents, _ := os.ReadDir(s.path(dirBlobs))
		for _, e := range ents {
			if c.name == "corrupt" && e.Name() == sha(files["model.safetensors"]) {
				t.Errorf("corrupt download stored as a blob")
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
