package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"syscall"
)

// Deploy is POST /v1/deployments: submit (or replace) a deployment.
func (c *Client) Deploy(ctx context.Context, req DeployRequest) (Deployment, error) {
	var d Deployment
	err := c.send(ctx, http.MethodPost, "/v1/deployments", req, &d)
	return d, err
}

// Deployments is GET /v1/deployments.
func (c *Client) Deployments(ctx context.Context) ([]Deployment, error) {
	var ds []Deployment
	err := c.send(ctx, http.MethodGet, "/v1/deployments", nil, &ds)
	return ds, err
}

// Remove is DELETE /v1/deployments/{name}; an unknown name is an *APIError
// with StatusCode 404.
func (c *Client) Remove(ctx context.Context, name string) (Deployment, error) {
	var d Deployment
	err := c.send(ctx, http.MethodDelete, "/v1/deployments/"+url.PathEscape(name), nil, &d)
	return d, err
}

// Scale is POST /v1/deployments/{name}/scale; an unknown name is an
// *APIError with StatusCode 404.
func (c *Client) Scale(ctx context.Context, name string, replicas int) (Deployment, error) {
	var d Deployment
	err := c.send(ctx, http.MethodPost, "/v1/deployments/"+url.PathEscape(name)+"/scale", ScaleRequest{Replicas: replicas}, &d)
	return d, err
}

// Logs is GET /v1/deployments/{name}/logs: it copies the output of this
// node's replicas of the deployment to w. An unknown name is an *APIError
// with StatusCode 404.
func (c *Client) Logs(ctx context.Context, name string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://shoal/v1/deployments/"+url.PathEscape(name)+"/logs", http.NoBody)
	if err != nil {
		return fmt.Errorf("node: control request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return noDaemon(c.home)
		}
		return fmt.Errorf("node: talk to daemon at %s: %w", filepath.Join(c.home, SocketFile), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e errorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(b))
		}
		return &APIError{StatusCode: resp.StatusCode, Message: e.Error}
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// Ledger is GET /v1/ledger: this node's reservations against its capacity.
func (c *Client) Ledger(ctx context.Context) (LedgerView, error) {
	var l LedgerView
	err := c.send(ctx, http.MethodGet, "/v1/ledger", nil, &l)
	return l, err
}

// send is do with an optional JSON body.
func (c *Client) send(ctx context.Context, method, path string, in, out any) error {
	body := io.Reader(http.NoBody)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("node: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://shoal"+path, body)
	if err != nil {
		return fmt.Errorf("node: control request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return noDaemon(c.home)
		}
		return fmt.Errorf("node: talk to daemon at %s: %w", filepath.Join(c.home, SocketFile), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("node: read daemon answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e errorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(b))
		}
		return &APIError{StatusCode: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("node: decode daemon answer to %s %s: %w", method, path, err)
	}
	return nil
}
