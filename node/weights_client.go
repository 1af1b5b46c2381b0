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

// WeightsList is GET /v1/weights: local models first, then the pool's.
func (c *Client) WeightsList(ctx context.Context) ([]WeightsModel, error) {
	var out []WeightsModel
	err := c.do(ctx, http.MethodGet, "/v1/weights", &out)
	return out, err
}

// WeightsPath is GET /v1/weights/path: the directory of a complete model.
func (c *Client) WeightsPath(ctx context.Context, ref string) (WeightsPath, error) {
	var out WeightsPath
	err := c.do(ctx, http.MethodGet, "/v1/weights/path?ref="+url.QueryEscape(ref), &out)
	return out, err
}

// WeightsAdd imports a file or directory (an absolute path the daemon can
// read) and waits for the result; imports have no time limit but ctx.
func (c *Client) WeightsAdd(ctx context.Context, req WeightsAddRequest) (*WeightsResult, error) {
	return c.stream(ctx, "/v1/weights/add", req, nil)
}

// WeightsFetch downloads a model's first copy from its origin, calling
// progress as bytes arrive.
func (c *Client) WeightsFetch(ctx context.Context, req WeightsFetchRequest, progress func(WeightsProgress)) (*WeightsResult, error) {
	return c.stream(ctx, "/v1/weights/fetch", req, progress)
}

// WeightsPull fetches a model from the pool's members, calling progress
// about every 100 ms. Cancelling ctx stops the pull; the verified chunks
// stay, and the next pull resumes from them.
func (c *Client) WeightsPull(ctx context.Context, ref string, progress func(WeightsProgress)) (*WeightsResult, error) {
	return c.stream(ctx, "/v1/weights/pull", WeightsRefRequest{Ref: ref}, progress)
}

// WeightsRemove, WeightsPin and WeightsUnpin act on a model this node
// holds and describe it afterwards.
func (c *Client) WeightsRemove(ctx context.Context, ref string) (WeightsModel, error) {
	return c.refOp(ctx, "/v1/weights/remove", ref)
}

// WeightsPin keeps a model from eviction and removal (pins count).
func (c *Client) WeightsPin(ctx context.Context, ref string) (WeightsModel, error) {
	return c.refOp(ctx, "/v1/weights/pin", ref)
}

// WeightsUnpin releases one pin.
func (c *Client) WeightsUnpin(ctx context.Context, ref string) (WeightsModel, error) {
	return c.refOp(ctx, "/v1/weights/unpin", ref)
}

func (c *Client) refOp(ctx context.Context, path, ref string) (WeightsModel, error) {
	var out WeightsModel
	resp, err := c.post(ctx, path, WeightsRefRequest{Ref: ref})
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return out, fmt.Errorf("node: read daemon answer: %w", err)
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("node: decode daemon answer to POST %s: %w", path, err)
	}
	return out, nil
}

func (c *Client) stream(ctx context.Context, path string, in any, progress func(WeightsProgress)) (*WeightsResult, error) {
	resp, err := c.post(ctx, path, in)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	res, err := ReadWeightsEvents(resp.Body, progress)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return res, err
}

// post sends in as JSON and returns a 2xx response; an error status
// becomes an *APIError.
func (c *Client) post(ctx context.Context, path string, in any) (*http.Response, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("node: encode control request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://shoal"+path, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("node: control request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
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
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e errorResponse
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(body))
		}
		return nil, &APIError{StatusCode: resp.StatusCode, Message: e.Error}
	}
	return resp, nil
}
