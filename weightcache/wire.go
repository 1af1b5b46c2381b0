package weightcache

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Protocol is the weight-transfer protocol on the mesh. Version 2 adds
// the fetcher's have-map and have updates (client to server) and the
// substitute chunk frame 'S', so that a server holding the whole model can
// super-seed: hand each chunk first to one fetcher only and let fetchers
// trade the rest. A version 1 peer does not speak it: the stream fails to
// negotiate and that peer is not a source.
//
// The fetcher opens a stream and sends a hello: "SWT2", an op byte and the
// model ID (1-byte length, then the ID). Op 'M' asks for the manifest: the
// server answers one frame, 'K' (the manifest bytes) or 'E', and closes. Op
// 'G' opens a chunk session: right after the hello the fetcher sends its
// own have-map ('B', then (n+7)/8 bytes for a model of n chunks, bit i MSB
// first = chunk i); the server answers 'B' with its have-map (or 'E').
// Then the fetcher sends 5-byte messages (a type byte, a chunk index
// uint32 big-endian): 'R' requests a chunk, as many in flight as it likes;
// 'H' says the fetcher now holds a chunk; 'F' says the chunk the server
// sent as that index failed the fetcher's check, and is the fetcher's last
// message (it closes its side after it). The server checks its own copy of
// a chunk reported so and ends the session (one that does not know 'F'
// ends it too, on a message it cannot read). The server answers requests in
// order, each with 'D' (the chunk asked for), 'S' (another chunk in its
// place, one the fetcher lacks and no other fetcher holds or was sent:
// super-seeding) or 'P' (no chunk, but the peer ID of another fetcher that
// holds it or was sent it: ask there; asked again, the server sends it),
// and between them sends 'H' when it gains a chunk (it may be downloading
// the same model). The fetcher closes its side when done.
//
// Server frames are a 9-byte header (type, a, b as big-endian uint32) and
// b bytes of payload:
//
//	'K' a=0            payload: manifest bytes
//	'B' a=chunk count  payload: have-map, (a+7)/8 bytes
//	'H' a=chunk index  no payload
//	'D' a=chunk index  payload: the chunk asked for by the oldest open request
//	'S' a=chunk index  payload: a chunk sent instead of the oldest open request
//	'P' a=chunk index  payload: a peer ID (binary) holding the chunk of the oldest open request
//	'E' a=error code   payload: a short message
const Protocol = "/shoal/weights/2.0.0"

const (
	helloMagic = "SWT2"
	opManifest = 'M'
	opGet      = 'G'
	opRequest  = 'R'
	opHave     = 'H'
	opHaveMap  = 'B'
	opBad      = 'F'

	frManifest = 'K'
	frHaveMap  = 'B'
	frHave     = 'H'
	frData     = 'D'
	frSubst    = 'S'
	frHint     = 'P'
	frError    = 'E'

	frameHeaderLen = 9
	requestLen     = 5
	maxErrorLen    = 1024
	maxHintLen     = 128 // a binary peer ID (an Ed25519 one is 38 bytes)

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

// clientMsg is one 5-byte message from fetcher to server: a request
// ('R'), a have ('H') or a report of a bad chunk ('F') for chunk i.
type clientMsg struct {
	typ byte
	i   int
}

func encodeClientMsg(typ byte, i uint32) [requestLen]byte {
	var b [requestLen]byte
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], i)
	return b
}

func encodeChunkRequest(i uint32) [requestLen]byte { return encodeClientMsg(opRequest, i) }

// decodeClientMsg decodes one fetcher message for a model of n chunks.
func decodeClientMsg(b []byte, n int) (clientMsg, error) {
	if len(b) != requestLen || b[0] != opRequest && b[0] != opHave && b[0] != opBad {
		return clientMsg{}, fmt.Errorf("%w: bad fetcher message", ErrProtocol)
	}
	i := binary.BigEndian.Uint32(b[1:])
	if int64(i) >= int64(n) { // n <= 0 refuses every index
		return clientMsg{}, fmt.Errorf("%w: chunk %d of %d", ErrProtocol, i, n)
	}
	return clientMsg{typ: b[0], i: int(i)}, nil
}

// encodeHaveMap is the have-map of have: bit i (MSB first) set when chunk
// i is held.
func encodeHaveMap(have []bool) []byte {
	bf := make([]byte, (len(have)+7)/8)
	for i, h := range have {
		if h {
			bf[i/8] |= 0x80 >> (i % 8)
		}
	}
	return bf
}

// decodeHaveMap checks a have-map for a model of n chunks: exactly
// (n+7)/8 bytes, no bit set past chunk n-1.
func decodeHaveMap(bf []byte, n int) ([]bool, error) {
	if n < 0 || int64(len(bf)) != (int64(n)+7)/8 {
		return nil, fmt.Errorf("%w: have-map of %d bytes for %d chunks", ErrProtocol, len(bf), n)
	}
	if n%8 != 0 && bf[len(bf)-1]&(0xff>>(n%8)) != 0 {
		return nil, fmt.Errorf("%w: have-map bits past chunk %d", ErrProtocol, n-1)
	}
	have := make([]bool, n)
	for i := range have {
		have[i] = bf[i/8]&(0x80>>(i%8)) != 0
	}
	return have, nil
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
	case frHint:
		if n < 0 || int64(h.a) >= int64(n) || h.b == 0 || h.b > maxHintLen {
			return bad("chunk index or peer ID size")
		}
	case frData, frSubst:
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

// decodeHint decodes the payload of a 'P' frame: a peer ID.
func decodeHint(b []byte) (peer.ID, error) {
	if len(b) == 0 || len(b) > maxHintLen {
		return "", fmt.Errorf("%w: peer hint of %d bytes", ErrProtocol, len(b))
	}
	p, err := peer.IDFromBytes(b)
	if err != nil {
		return "", fmt.Errorf("%w: peer hint: %v", ErrProtocol, err)
	}
	return p, nil
}
