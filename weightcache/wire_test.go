package weightcache

import (
	"bytes"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func FuzzDecodeClientMsg(f *testing.F) {
	rq := encodeChunkRequest(3)
	f.Add(rq[:], 10)
	hv := encodeClientMsg(opHave, 9)
	f.Add(hv[:], 10)
	bad := encodeClientMsg(opBad, 0)
	f.Add(bad[:], 1)
	f.Add([]byte{'R', 0xff, 0xff, 0xff, 0xff}, 1<<20)
	f.Add([]byte{'X'}, 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		m, err := decodeClientMsg(b, n)
		if err != nil {
			return
		}
		if m.i < 0 || m.i >= n {
			t.Fatalf("decodeClientMsg(%x, %d) = %+v; index out of range", b, n, m)
		}
		if enc := encodeClientMsg(m.typ, uint32(m.i)); !bytes.Equal(enc[:], b) {
			t.Fatalf("re-encoded %x; want %x", enc, b)
		}
	})
}

func FuzzDecodeHaveMap(f *testing.F) {
	f.Add(encodeHaveMap([]bool{true, false, true}), 3)
	f.Add([]byte{0xff, 0xff}, 16)
	f.Add([]byte{0xff, 0xff}, 9)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		have, err := decodeHaveMap(b, n)
		if err != nil {
			return
		}
		if len(have) != n {
			t.Fatalf("decodeHaveMap(%x, %d) gave %d chunks", b, n, len(have))
		}
		if enc := encodeHaveMap(have); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded %x; want %x", enc, b)
		}
	})
}

func FuzzDecodeHint(f *testing.F) {
	f.Add([]byte(peer.ID("\x00\x24\x08\x01\x12\x20abcdefghijklmnopqrstuvwxyz012345")))
	f.Add([]byte{0x12, 0x20, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeHint(b)
		if err != nil {
			return
		}
		if string(p) != string(b) || p.Validate() != nil {
			t.Fatalf("decodeHint(%x) = %q; not the same valid ID", b, p)
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
	for _, h := range []frameHeader{{frData, 1, 100}, {frSubst, 3, 100}, {frHint, 3, 38}, {frHaveMap, 9, 2}, {frError, 1, 5}, {frManifest, 0, 10}, {frHave, 2, 0}} {
		b := h.encode()
		f.Add(b[:], 9, int64(1<<20))
	}
	f.Fuzz(func(t *testing.T, b []byte, n int, chunkSize int64) {
		h, err := decodeFrameHeader(b, n, chunkSize)
		if err != nil {
			return
		}
		switch h.typ {
		case frData, frSubst:
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
