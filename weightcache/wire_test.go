package weightcache

import (
	"bytes"
	"testing"
)

func FuzzDecodeChunkRequest(f *testing.F) {
	rq := encodeChunkRequest(3)
	f.Add(rq[:], 10)
	f.Add([]byte{'R', 0xff, 0xff, 0xff, 0xff}, 1<<20)
	f.Add([]byte{'X'}, 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		i, err := decodeChunkRequest(b, n)
		if err != nil {
			return
		}
		if i < 0 || i >= n {
			t.Fatalf("decodeChunkRequest(%x, %d) = %d; out of range", b, n, i)
		}
		if enc := encodeChunkRequest(uint32(i)); !bytes.Equal(enc[:], b) {
			t.Fatalf("re-encoded %x; want %x", enc, b)
		}
	})
}

func FuzzDecodeHello(f *testing.F) {
	id := IDOf([]byte("x"))
	f.Add(encodeHello(hello{op: opGet, id: id}))
	f.Add(encodeHello(hello{op: opManifest, id: "nope"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHello(b)
		if err != nil {
			return
		}
		if CheckID(h.id) != nil {
			t.Fatalf("accepted bad id %q", h.id)
		}
		if !bytes.Equal(encodeHello(h), b) {
			t.Fatalf("hello does not re-encode")
		}
	})
}

func FuzzDecodeFrameHeader(f *testing.F) {
	for _, h := range []frameHeader{{frData, 1, 100}, {frHaveMap, 9, 2}, {frError, 1, 5}, {frManifest, 0, 10}, {frHave, 2, 0}} {
		b := h.encode()
		f.Add(b[:], 9, int64(1<<20))
	}
	f.Fuzz(func(t *testing.T, b []byte, n int, chunkSize int64) {
		h, err := decodeFrameHeader(b, n, chunkSize)
		if err != nil {
			return
		}
		switch h.typ {
		case frData:
			if int64(h.a) >= int64(n) || int64(h.b) > chunkSize {
				t.Fatalf("data frame %+v accepted for n=%d size=%d", h, n, chunkSize)
			}
		case frHaveMap:
			if int64(h.b) != (int64(n)+7)/8 {
				t.Fatalf("have-map %+v accepted for n=%d", h, n)
			}
		case frManifest:
			if h.b > MaxManifestBytes {
				t.Fatalf("manifest frame of %d bytes accepted", h.b)
			}
		}
	})
}
