package node

import (
	"context"
	"io"
	"net/http"
	"net/url"
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
	resp, err := c.open(ctx, http.MethodGet, "/v1/deployments/"+url.PathEscape(name)+"/logs", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// Ledger is GET /v1/ledger: this node's reservations against its capacity.
func (c *Client) Ledger(ctx context.Context) (LedgerView, error) {
	var l LedgerView
	err := c.send(ctx, http.MethodGet, "/v1/ledger", nil, &l)
	return l, err
}
