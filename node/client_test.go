package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientNoDaemon(t *testing.T) {
	missing := t.TempDir()
	stale := t.TempDir()
	// A socket nobody listens on, as a killed daemon leaves it.
	l, err := net.Listen("unix", filepath.Join(stale, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	for _, home := range []string{missing, stale, filepath.Join(missing, "does-not-exist")} {
		_, err := NewClient(home).Status(context.Background())
		if !errors.Is(err, ErrNoDaemon) {
			t.Errorf("Status(%s) = %v; want ErrNoDaemon", home, err)
			continue
		}
		want := "no shoal daemon is running for home " + home + "; start one with `shoal up` or `shoal join TOKEN`"
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Status(%s) error = %q; want it to contain %q", home, err, want)
		}
	}
}

func TestClientAgainstControlServer(t *testing.T) {
	home := t.TempDir()
	f := newControlFixture(t)
	ln, err := listenControl(filepath.Join(home, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.srv.handler()}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-done
	}()

	ctx := context.Background()
	c := NewClient(home)
	if tok, err := c.Token(ctx); err != nil || tok != "shoal1.faketoken" {
		t.Errorf("Token = %q, %v; want shoal1.faketoken", tok, err)
	}
	ms, err := c.Nodes(ctx)
	if err != nil || len(ms) != 3 || !ms[0].Self {
		t.Errorf("Nodes = %d members, %v; want 3, self first", len(ms), err)
	}
	raw, err := c.Get(ctx, "/v1/nodes")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
		t.Errorf("Get(/v1/nodes) = %.40q, %v; want a JSON array", raw, err)
	}
	rec, err := c.Record(ctx, f.a.PeerID.String())
	if err != nil || rec.Name != "gpu-box" {
		t.Errorf("Record(a) = %+v, %v; want gpu-box", rec, err)
	}
	_, err = c.Record(ctx, f.b.PeerID.String())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !errors.Is(err, ErrAPI) {
		t.Errorf("Record(no record) = %v; want APIError 404", err)
	}
	_, err = c.Record(ctx, "bogus")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
		t.Errorf("Record(bogus) = %v; want APIError 400", err)
	}
}
