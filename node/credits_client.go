package node

import (
	"context"
	"net/http"
)

// Credits is GET /v1/credits: the pool's ledger of usage receipts as this
// node computes it.
func (c *Client) Credits(ctx context.Context) (CreditsReport, error) {
	var r CreditsReport
	err := c.send(ctx, http.MethodGet, "/v1/credits", nil, &r)
	return r, err
}
