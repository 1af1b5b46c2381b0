// Package market will own prices that nodes ask, limits that deployments bid,
// metering of GPU-seconds into signed usage receipts, balances and fair-share
// priority. It must never block placement when a pool runs free (price 0 is
// the default). Nothing is implemented yet; see docs/ARCHITECTURE.md.
package market
