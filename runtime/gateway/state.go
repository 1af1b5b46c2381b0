package gateway

import (
	"sync"
	"time"
)

// depState is what one gateway tracks of one deployment: requests it
// received (waiting or being answered), the time-weighted integral of that
// count for the next Sample, and the queue of requests waiting for a
// replica.
type depState struct {
	mu           sync.Mutex
	inFlight     int       // received and not yet answered, waiting included
	waiting      int       // waiting for a ready replica
	area         float64   // request-seconds since start
	last         time.Time // when inFlight last changed (or was integrated)
	start        time.Time // start of the current sample interval
	requests     int       // arrivals since start
	reportedZero bool      // the last sample was 0: stay silent until traffic returns
	lastScaleUp  time.Time // zero: none in this wait episode yet
	episode      bool      // requests waited since a replica was last found
}

func newDepState(now time.Time) *depState { return &depState{start: now, last: now} }

// advance integrates inFlight up to now; the caller holds mu.
func (s *depState) advance(now time.Time) {
	if now.After(s.last) {
		s.area += float64(s.inFlight) * now.Sub(s.last).Seconds()
		s.last = now
	}
}

func (s *depState) begin(now time.Time) {
	s.mu.Lock()
	s.advance(now)
	s.inFlight++
	s.requests++
	s.mu.Unlock()
}

func (s *depState) end(now time.Time) {
	s.mu.Lock()
	s.advance(now)
	s.inFlight--
	s.mu.Unlock()
}

// sample closes the interval ending at now. It reports false when there
// is nothing to say: no traffic in this interval, and 0 said already.
func (s *depState) sample(now time.Time, interval time.Duration) (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	d := now.Sub(s.start)
	if d <= 0 {
		d = interval
	}
	out := Sample{At: now, Interval: d, Concurrency: s.area / d.Seconds(), Requests: s.requests, Waiting: s.waiting}
	active := s.requests > 0 || s.inFlight > 0 || s.area > 0
	report := active || !s.reportedZero
	s.reportedZero = !active
	s.area, s.requests, s.start = 0, 0, now
	return out, report
}

// idle reports whether nothing is in flight and 0 was reported.
func (s *depState) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight == 0 && s.reportedZero
}

// enqueue admits a request to the wait queue unless limit wait already.
// The first waiter of a wave starts a new episode: ScaleUp is due at once.
func (s *depState) enqueue(limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting >= limit {
		return false
	}
	s.waiting++
	if s.waiting == 1 && !s.episode {
		s.episode, s.lastScaleUp = true, time.Time{}
	}
	return true
}

func (s *depState) dequeue() {
	s.mu.Lock()
	s.waiting--
	s.mu.Unlock()
}

func (s *depState) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// scaleUpDue reports whether the caller should call ScaleUp now, and if so
// notes that it does.
func (s *depState) scaleUpDue(now time.Time, retry time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastScaleUp.IsZero() || now.Sub(s.lastScaleUp) >= retry {
		s.lastScaleUp = now
		return true
	}
	return false
}

// found ends the wait episode; it reports whether this call ended it (one
// cold start).
func (s *depState) found() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.episode
	s.episode = false
	return was
}
