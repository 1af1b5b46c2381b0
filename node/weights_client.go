package node

import (
	"context"
	"net/http"
	"net/url"
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

// WeightsVerify re-hashes a complete model on the daemon's disk, calling
// progress about every 100 ms. A model that fails is left partial (its bad
// file dropped) and the error says so.
func (c *Client) WeightsVerify(ctx context.Context, ref string, progress func(WeightsProgress)) (*WeightsResult, error) {
	return c.stream(ctx, "/v1/weights/verify", WeightsRefRequest{Ref: ref}, progress)
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
	err := c.send(ctx, http.MethodPost, path, WeightsRefRequest{Ref: ref}, &out)
	return out, err
}

func (c *Client) stream(ctx context.Context, path string, in any, progress func(WeightsProgress)) (*WeightsResult, error) {
	resp, err := c.open(ctx, http.MethodPost, path, in)
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
