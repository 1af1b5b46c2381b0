package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoalmesh/shoal/mesh"
)

// pollInterval is how often Client.Leave and Spawn look at a daemon that is
// stopping or starting.
const pollInterval = 50 * time.Millisecond

// Client talks to the daemon of one home over its control socket. It is
// safe for concurrent use.
type Client struct {
	home string
	hc   *http.Client
}

// NewClient returns a client for the daemon of home (an absolute path, see
// ResolveHome). It does not connect until a call.
func NewClient(home string) *Client {
	sock := filepath.Join(home, SocketFile)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true, // one CLI call, one request
	}
	return &Client{home: home, hc: &http.Client{Transport: tr}}
}

// Home is the home directory the client talks to.
func (c *Client) Home() string { return c.home }

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &s)
	return s, err
}

// Nodes is GET /v1/nodes: every member, self first.
func (c *Client) Nodes(ctx context.Context) ([]Member, error) {
	var ms []Member
	err := c.do(ctx, http.MethodGet, "/v1/nodes", &ms)
	return ms, err
}

// Token is GET /v1/token: the pool's join token.
func (c *Client) Token(ctx context.Context) (string, error) {
	var t TokenResponse
	err := c.do(ctx, http.MethodGet, "/v1/token", &t)
	return t.Token, err
}

// Record is GET /v1/records/{peer}: a member's verified record from the
// DHT. peerID may be a unique prefix of a member's ID. A missing record is
// an *APIError with StatusCode 404.
func (c *Client) Record(ctx context.Context, peerID string) (*mesh.Record, error) {
	var r mesh.Record
	if err := c.do(ctx, http.MethodGet, "/v1/records/"+url.PathEscape(peerID), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Get returns the raw JSON body of GET path, for callers that pass it on
// unchanged (`shoal nodes -o json`).
func (c *Client) Get(ctx context.Context, path string) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.do(ctx, http.MethodGet, path, &raw)
	return raw, err
}

// Leave asks the daemon to leave the pool (POST /v1/leave) and waits until
// it has stopped and released the home. Without a deadline on ctx it waits
// at most 15 seconds.
func (c *Client) Leave(ctx context.Context) (LeaveResponse, error) {
	var lr LeaveResponse
	if err := c.do(ctx, http.MethodPost, "/v1/leave", &lr); err != nil {
		return lr, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	return lr, WaitStopped(ctx, c.home)
}

// WaitStopped waits until no daemon holds home's lock. It gives up with
// ErrLeaveTimeout when ctx ends.
func WaitStopped(ctx context.Context, home string) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		err := CheckHomeFree(home)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrHomeLocked) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v; see %s: %w", ErrLeaveTimeout, err, filepath.Join(home, LogFile), ctx.Err())
		case <-t.C:
		}
	}
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	return c.send(ctx, method, path, nil, out)
}

// send is a control call with an optional JSON body in, decoding the JSON
// answer into out (when not nil).
func (c *Client) send(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.open(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("node: read daemon answer: %w", err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("node: decode daemon answer to %s %s: %w", method, path, err)
	}
	return nil
}

// open sends a control request (with in as its JSON body when not nil) and
// returns a 2xx response for the caller to read and close. An unreachable
// daemon is ErrNoDaemon; an error status becomes an *APIError.
func (c *Client) open(ctx context.Context, method, path string, in any) (*http.Response, error) {
	body := io.Reader(http.NoBody)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("node: encode control request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://shoal"+path, body)
	if err != nil {
		return nil, fmt.Errorf("node: control request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, noDaemon(c.home)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("node: talk to daemon at %s: %w", filepath.Join(c.home, SocketFile), err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e errorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(b))
		}
		return nil, &APIError{StatusCode: resp.StatusCode, Message: e.Error}
	}
	return resp, nil
}

func noDaemon(home string) error {
	return fmt.Errorf("%w for home %s; start one with `shoal up` or `shoal join TOKEN`", ErrNoDaemon, home)
}
