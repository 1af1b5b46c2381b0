package weightcache

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Protocol is the weight-transfer protocol on the mesh.
//
// The fetcher opens a stream and sends a hello: "SWT1", an op byte and the
// model ID (1-byte length, then the ID). Op 'M' asks for the manifest: the
// server answers one frame, 'K' (the manifest bytes) or 'E', and closes. Op
// 'G' opens a chunk session: the server answers 'B' with its have-map (or
// 'E'), then the fetcher sends requests, each 5 bytes ('R', chunk index
// uint32 big-endian), as many in flight as it likes; the server answers
// them in order with 'D' frames and, between them, sends 'H' when it gains
// a chunk (it may be downloading the same model). The fetcher closes its
// side when done.
//
// Server frames are a 9-byte header (type, a, b as big-endian uint32) and
// b bytes of payload:
//
//	'K' a=0            payload: manifest bytes
//	'B' a=chunk count  payload: have-map, (a+7)/8 bytes, bit i (MSB first) = chunk i
//	'H' a=chunk index  no payload
//	'D' a=chunk index  payload: the chunk
//	'E' a=error code   payload: a short message
const Protocol = "/shoal/weights/1.0.0"

const (
	helloMagic = "SWT1"
	opManifest = 'M'
	opGet      = 'G'
	opRequest  = 'R'

	frManifest = 'K'
	frHaveMap  = 'B'
	frHave     = 'H'
	frData     = 'D'
	frError    = 'E'

	frameHeaderLen = 9
	requestLen     = 5
	maxErrorLen    = 1024

	codeNotFound = 1
	codeBusy     = 2
	codeBad      = 3
)

type hello struct {
	op byte
	id string
}

func encodeHello(h hello) []byte {
	b := append([]byte(helloMagic), h.op, byte(len(h.id)))
	return append(b, h.id...)
}

// readHello reads and checks a hello.
func readHello(r io.Reader) (hello, error) {
	var head [6]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return hello{}, err
	}
	id := make([]byte, head[5])
	if _, err := io.ReadFull(r, id); err != nil {
		return hello{}, err
	}
	return decodeHello(append(head[:], id...))
}

func decodeHello(b []byte) (hello, error) {
	if len(b) < 6 || string(b[:4]) != helloMagic {
		return hello{}, fmt.Errorf("%w: bad hello", ErrProtocol)
	}
	h := hello{op: b[4]}
	if h.op != opManifest && h.op != opGet {
		return hello{}, fmt.Errorf("%w: op %q", ErrProtocol, h.op)
	}
	if int(b[5]) != len(b)-6 {
		return hello{}, fmt.Errorf("%w: hello length", ErrProtocol)
	}
	h.id = string(b[6:])
	if err := CheckID(h.id); err != nil {
		return hello{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return h, nil
}

func encodeChunkRequest(i uint32) [requestLen]byte {
	var b [requestLen]byte
	b[0] = opRequest
	binary.BigEndian.PutUint32(b[1:], i)
	return b
}

// decodeChunkRequest decodes one request for a model of n chunks.
func decodeChunkRequest(b []byte, n int) (int, error) {
	if len(b) != requestLen || b[0] != opRequest {
		return 0, fmt.Errorf("%w: bad chunk request", ErrProtocol)
	}
	i := binary.BigEndian.Uint32(b[1:])
	if int64(i) >= int64(n) { // n <= 0 refuses every index
		return 0, fmt.Errorf("%w: chunk %d of %d", ErrProtocol, i, n)
	}
	return int(i), nil
}

type frameHeader struct {
	typ  byte
	a, b uint32
}

func (h frameHeader) encode() [frameHeaderLen]byte {
	var b [frameHeaderLen]byte
	b[0] = h.typ
	binary.BigEndian.PutUint32(b[1:], h.a)
	binary.BigEndian.PutUint32(b[5:], h.b)
	return b
}

// decodeFrameHeader checks a server frame header against a model of n
// chunks (n < 0: not known yet, only 'K' and 'E' allowed) with chunks of
// at most chunkSize bytes.
func decodeFrameHeader(b []byte, n int, chunkSize int64) (frameHeader, error) {
	if len(b) != frameHeaderLen {
		return frameHeader{}, fmt.Errorf("%w: short frame header", ErrProtocol)
	}
	h := frameHeader{typ: b[0], a: binary.BigEndian.Uint32(b[1:]), b: binary.BigEndian.Uint32(b[5:])}
	bad := func(what string) (frameHeader, error) {
		return frameHeader{}, fmt.Errorf("%w: frame %q: %s", ErrProtocol, h.typ, what)
	}
	switch h.typ {
	case frManifest:
		if h.b > MaxManifestBytes {
			return bad("manifest too large")
		}
	case frError:
		if h.b > maxErrorLen {
			return bad("message too long")
		}
	case frHaveMap:
		if n < 0 || int64(h.a) != int64(n) || int64(h.b) != (int64(n)+7)/8 {
			return bad("have-map size")
		}
	case frHave:
		if n < 0 || int64(h.a) >= int64(n) || h.b != 0 {
			return bad("chunk index")
		}
	case frData:
		if n < 0 || int64(h.a) >= int64(n) || int64(h.b) > chunkSize {
			return bad("chunk index or size")
		}
	default:
		return bad("unknown type")
	}
	return h, nil
}

// writeFrame writes a header and its payload.
func writeFrame(w io.Writer, typ byte, a uint32, payload []byte) error {
	hd := frameHeader{typ: typ, a: a, b: uint32(len(payload))}.encode()
	if _, err := w.Write(hd[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := w.Write(payload)
	return err
}

func writeError(w io.Writer, code uint32, msg string) error {
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen]
	}
	return writeFrame(w, frError, code, []byte(msg))
}

// remoteError is an 'E' frame from a peer.
type remoteError struct {
	code uint32
	msg  string
}

func (e *remoteError) Error() string {
	return fmt.Sprintf("weightcache: peer refused (code %d): %s", e.code, e.msg)
}
