package weightcache

import "sync"

// chunkBufs holds chunk buffers of DefaultChunkSize for the server's
// loaders and the fetch's readers, so a session does not allocate (and the
// collector does not sweep) 4 MiB per buffer it opens.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, DefaultChunkSize); return &b }}

// getChunkBuf returns a buffer of at least size bytes (len = cap).
func getChunkBuf(size int64) []byte {
	if size > DefaultChunkSize {
		return make([]byte, size)
	}
	b := *chunkBufs.Get().(*[]byte)
	return b[:cap(b)]
}

// putChunkBuf gives back a buffer from getChunkBuf.
func putChunkBuf(b []byte) {
	if cap(b) != DefaultChunkSize {
		return
	}
	b = b[:cap(b)]
	chunkBufs.Put(&b)
}
