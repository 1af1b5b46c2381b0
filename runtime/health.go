package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Health polling: first poll after healthFirst, doubling up to healthMax.
// A workload that loads a model takes seconds to minutes; the reference
// workload takes milliseconds, so the first polls are quick.
const (
	healthFirst   = 20 * time.Millisecond
	healthMax     = 500 * time.Millisecond
	healthRequest = 2 * time.Second // one GET
	logTailBytes  = 2048            // of output quoted in a start error
	minHealthWait = time.Second     // health wait left after a start that used up the timeout
)

// inspector is what WaitHealthy needs of a backend.
type inspector interface {
	Inspect(ctx context.Context, id string) (Replica, error)
}

// WaitHealthy polls r's health path until it answers 2xx (nil), the
// replica exits (ErrExited), timeout passes (ErrUnhealthy) or ctx ends. A
// replica without a health path is healthy once it runs.
func WaitHealthy(ctx context.Context, b inspector, r Replica, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: healthRequest}
	wait := healthFirst
	var last string
	for {
		cur, err := b.Inspect(ctx, r.ID)
		switch {
		case err != nil && ctx.Err() == nil:
			return err
		case err == nil && cur.State == StateExited:
			return fmt.Errorf("%w: %s exited with status %d before it became healthy", ErrExited, r.ID, cur.ExitCode)
		case err == nil && cur.HealthPath == "":
			return nil // no HTTP endpoint: running is healthy
		case err == nil && cur.Endpoint != "":
			ok, why := probe(ctx, hc, cur.Endpoint+cur.HealthPath)
			if ok {
				return nil
			}
			last = why
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if last == "" {
					last = "no answer"
				}
				return fmt.Errorf("%w: %s not healthy after %v (last probe: %s)", ErrUnhealthy, r.ID, timeout, last)
			}
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, healthMax)
	}
}

func probe(ctx context.Context, hc *http.Client, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err.Error()
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return true, ""
	}
	return false, fmt.Sprintf("GET %s: %s", url, resp.Status)
}

// StartHealthy starts s on b and waits until it is healthy, within
// s.StartTimeout. On any failure it quotes the end of the replica's output
// in the error and removes the replica, so nothing is left behind.
func StartHealthy(ctx context.Context, b Backend, s Spec) (Replica, error) {
	if err := s.Validate(); err != nil {
		return Replica{}, err
	}
	deadline := time.Now().Add(s.StartTimeout)
	r, err := b.Start(ctx, s)
	if err != nil {
		return Replica{}, err
	}
	// A slow start (image pull, engine under load) still gets a real probe.
	err = WaitHealthy(ctx, b, r, max(time.Until(deadline), minHealthWait))
	if err == nil {
		return b.Inspect(ctx, r.ID)
	}
	// Clean up even when ctx ended: the caller must not inherit a replica.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if tail := LogTail(cctx, b, r.ID, logTailBytes); tail != "" {
		err = fmt.Errorf("%w; its output ends:\n%s", err, tail)
	}
	if rerr := b.Remove(cctx, r.ID); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return Replica{}, err
}

// LogTail returns at most n bytes from the end of the replica's output, or
// "" when there is none.
func LogTail(ctx context.Context, b Backend, id string, n int) string {
	rc, err := b.Logs(ctx, id)
	if err != nil {
		return ""
	}
	defer rc.Close()
	var buf bytes.Buffer
	io.Copy(&buf, io.LimitReader(rc, 64<<20))
	out := buf.Bytes()
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.TrimRight(string(out), "\n")
}
