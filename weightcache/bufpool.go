package weightcache

import (
	"sync"
	"time"
)

// Chunk buffers of DefaultChunkSize for the server's loaders and the
// fetch's readers are kept on a free list while transfers go on. A fresh
// buffer costs a page fault per 4 KiB on its first use; on a virtual
// machine whose host takes freed memory back, that made copying chunks
// into new buffers cost as much as decrypting them (measured: memmove
// 3.6 of 12.8 CPU-seconds with eight fetchers at once, when a sync.Pool,
// emptied by every collection, held them). The list keeps at most
// maxFreeChunkBufs buffers and lets them all go once no buffer was taken
// for freeChunkBufsFor, so an idle daemon holds none.
const (
	maxFreeChunkBufs = 32 // 128 MiB
	freeChunkBufsFor = 30 * time.Second
)

var chunkBufs bufList

type bufList struct {
	mu    sync.Mutex
	free  [][]byte
	used  time.Time   // last get
	timer *time.Timer // drains the list once idle
}

// getChunkBuf returns a buffer of at least size bytes (len = cap).
func getChunkBuf(size int64) []byte {
	if size > DefaultChunkSize {
		return make([]byte, size)
	}
	return chunkBufs.get()
}

// putChunkBuf gives back a buffer from getChunkBuf.
func putChunkBuf(b []byte) {
	if cap(b) != DefaultChunkSize {
		return
	}
	chunkBufs.put(b[:cap(b)])
}

func (l *bufList) get() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.used = time.Now()
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		return b
	}
	return make([]byte, DefaultChunkSize)
}

func (l *bufList) put(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < maxFreeChunkBufs {
		l.free = append(l.free, b)
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(freeChunkBufsFor, l.drainIdle)
	}
}

// drainIdle lets the buffers go when none was taken for freeChunkBufsFor,
// else looks again when that much time will have passed.
func (l *bufList) drainIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if idle := time.Since(l.used); idle < freeChunkBufsFor {
		l.timer.Reset(freeChunkBufsFor - idle)
		return
	}
	clear(l.free)
	l.free = l.free[:0]
	l.timer = nil
}

// bufSlots lends one session at most n chunk buffers of size bytes,
// made on first need, so a session that moves no chunk (or sends chunks
// from a file's mapping) holds none. take is called by one goroutine;
// give by any.
type bufSlots struct {
	free chan []byte
	made int
	size int64
}

func newBufSlots(n int, size int64) *bufSlots {
	return &bufSlots{free: make(chan []byte, n), size: size}
}

// take returns a buffer, waiting for one to be given back when all n are
// out; it reports false if done closes first (a nil done never does).
func (b *bufSlots) take(done <-chan struct{}) ([]byte, bool) {
	select {
	case buf := <-b.free:
		return buf, true
	default:
	}
	if b.made < cap(b.free) {
		b.made++
		return getChunkBuf(b.size), true
	}
	select {
	case buf := <-b.free:
		return buf, true
	case <-done:
		return nil, false
	}
}

// give hands back a buffer from take.
func (b *bufSlots) give(buf []byte) { b.free <- buf }

// release puts the buffers given back on the free list; call it once
// every buffer taken has been given back.
func (b *bufSlots) release() {
	for len(b.free) > 0 {
		putChunkBuf(<-b.free)
	}
}
