package mesh

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
)

// Admission errors.
var (
	// ErrAdmissionRefused: the other side does not hold the pool secret, or
	// refused ours.
	ErrAdmissionRefused = errors.New("mesh: pool admission refused")
	// ErrDuplicateIdentity: a member with this node's peer ID and another
	// fingerprint (a copied home dir) is alive in the pool.
	ErrDuplicateIdentity = errors.New("mesh: another machine already uses this node identity")
	// errCopiedPeer: the remote presents the peer ID of a live member with
	// another fingerprint. Only that connection is dropped; the peer ID is
	// not banned, since the original holds it too.
	errCopiedPeer = errors.New("mesh: peer presents the identity of a live member")
)

// Admission is a mutual challenge-response over the pool secret, bound to both
// peer IDs (which the secure channel has authenticated) and to fresh nonces
// from both sides, so a transcript proves nothing in another session:
//
//	I -> R  nonceI
//	R -> I  nonceR, HMAC(secret, "resp", nonceI, nonceR, R, I)
//	I -> R  HMAC(secret, "init", nonceI, nonceR, I, R), helloI
//	R -> I  status, helloR          (R refuses a bad proof or a duplicate identity)
//	I -> R  status                  (I may refuse R as a duplicate identity)
//
// pnet cannot guard QUIC, so admission is ours: until a peer is admitted every
// other protocol handler waits, and a peer that fails is disconnected and
// refused by the connection gater for banFor.
const (
	admitProtocol = protocol.ID("/shoal/admit/1.0.0")
	admitTimeout  = 5 * time.Second
	banFor        = time.Minute
	nonceSize     = 32
	maxHelloSize  = 4 << 10
)

type admitStatus byte

const (
	admitOK admitStatus = iota
	admitBadProof
	admitDuplicate
)

// admitHello is what members tell each other once both proofs hold.
type admitHello struct {
	Instance    string `json:"instance"`
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name"`
}

func admitMAC(secret []byte, label string, nonceI, nonceR []byte, a, b peer.ID) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("shoal/admit/v1\x00" + label + "\x00"))
	m.Write(nonceI)
	m.Write(nonceR)
	m.Write([]byte(a))
	m.Write([]byte{0})
	m.Write([]byte(b))
	return m.Sum(nil)
}

// admitter runs the handshake and holds who is admitted and who is banned.
type admitter struct {
	secret []byte
	self   peer.ID
	hello  admitHello
	now    func() time.Time
	// duplicate reports whether id, presenting hello, collides with a live
	// member of the same peer ID and another fingerprint.
	duplicate func(id peer.ID, hello admitHello) bool
	// admitted is called once per peer when it becomes admitted.
	onAdmit func(id peer.ID, hello admitHello)
	// count records the outcome of every handshake, for metrics.
	count func(result string)

	mu       sync.Mutex
	admitted map[peer.ID]admitHello
	banned   map[peer.ID]time.Time
	waiters  map[peer.ID][]chan struct{}
	fatal    error // set when a member refused us as a duplicate identity
}

func newAdmitter(secret []byte, self peer.ID, hello admitHello) *admitter {
	return &admitter{
		secret: secret, self: self, hello: hello, now: time.Now,
		duplicate: func(peer.ID, admitHello) bool { return false },
		onAdmit:   func(peer.ID, admitHello) {},
		count:     func(string) {},
		admitted:  map[peer.ID]admitHello{},
		banned:    map[peer.ID]time.Time{},
		waiters:   map[peer.ID][]chan struct{}{},
	}
}

func (a *admitter) isAdmitted(id peer.ID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.admitted[id]
	return ok
}

func (a *admitter) isBanned(id peer.ID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	until, ok := a.banned[id]
	if ok && a.now().After(until) {
		delete(a.banned, id)
		return false
	}
	return ok
}

// waitAdmitted blocks until id is admitted or ctx ends.
func (a *admitter) waitAdmitted(ctx context.Context, id peer.ID) bool {
	a.mu.Lock()
	if _, ok := a.admitted[id]; ok {
		a.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	a.waiters[id] = append(a.waiters[id], ch)
	a.mu.Unlock()
	select {
	case <-ch:
		return a.isAdmitted(id)
	case <-ctx.Done():
		return false
	}
}

func (a *admitter) admit(id peer.ID, hello admitHello) {
	a.mu.Lock()
	_, was := a.admitted[id]
	a.admitted[id] = hello
	ws := a.waiters[id]
	delete(a.waiters, id)
	a.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
	if !was {
		a.onAdmit(id, hello)
	}
}

// forget drops id's admission (its last connection closed).
func (a *admitter) forget(id peer.ID) {
	a.mu.Lock()
	delete(a.admitted, id)
	a.mu.Unlock()
}

func (a *admitter) ban(id peer.ID) {
	a.mu.Lock()
	a.banned[id] = a.now().Add(banFor)
	delete(a.admitted, id)
	ws := a.waiters[id]
	delete(a.waiters, id)
	a.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
}

func (a *admitter) setFatal(err error) {
	a.mu.Lock()
	if a.fatal == nil {
		a.fatal = err
	}
	a.mu.Unlock()
}

// initiate runs the initiator's side over s.
func (a *admitter) initiate(s network.Stream) (admitHello, error) {
	remote := s.Conn().RemotePeer()
	_ = s.SetDeadline(a.now().Add(admitTimeout))
	r := bufio.NewReader(s)
	nonceI := make([]byte, nonceSize)
	if _, err := rand.Read(nonceI); err != nil {
		return admitHello{}, err
	}
	if _, err := s.Write(nonceI); err != nil {
		return admitHello{}, err
	}
	nonceR, macR := make([]byte, nonceSize), make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, nonceR); err != nil {
		return admitHello{}, fmt.Errorf("reading challenge: %w", err)
	}
	if _, err := io.ReadFull(r, macR); err != nil {
		return admitHello{}, fmt.Errorf("reading proof: %w", err)
	}
	if !hmac.Equal(macR, admitMAC(a.secret, "resp", nonceI, nonceR, remote, a.self)) {
		// Say so, where the responder expects our proof: it then knows we
		// are of another pool rather than slow, and bans us in turn.
		refuseOn(s, admitBadProof)
		return admitHello{}, fmt.Errorf("%w: %s cannot prove it holds the pool secret", ErrAdmissionRefused, remote)
	}
	msg := admitMAC(a.secret, "init", nonceI, nonceR, a.self, remote)
	if _, err := s.Write(appendFrame(msg, mustJSON(a.hello))); err != nil {
		return admitHello{}, err
	}
	status, body, err := readStatus(r)
	if err != nil {
		return admitHello{}, fmt.Errorf("reading verdict: %w", err)
	}
	switch status {
	case admitOK:
	case admitDuplicate:
		return admitHello{}, ErrDuplicateIdentity
	default:
		return admitHello{}, fmt.Errorf("%w: %s refused our proof", ErrAdmissionRefused, remote)
	}
	var hello admitHello
	if err := json.Unmarshal(body, &hello); err != nil {
		return admitHello{}, fmt.Errorf("%w: bad hello from %s", ErrAdmissionRefused, remote)
	}
	verdict := admitOK
	if a.duplicate(remote, hello) {
		verdict = admitDuplicate
	}
	if verdict == admitDuplicate {
		refuseOn(s, admitDuplicate)
		return admitHello{}, fmt.Errorf("%w: %s", errCopiedPeer, remote)
	}
	if _, err := s.Write(appendFrame([]byte{byte(verdict)}, nil)); err != nil {
		return admitHello{}, err
	}
	return hello, nil
}

// refuseOn sends a refusal and waits (within the stream's deadline) for the
// other side to read it and close, so the verdict is not lost when the
// connection is closed right after.
func refuseOn(s network.Stream, st admitStatus) {
	_, _ = s.Write(appendFrame([]byte{byte(st)}, nil))
	_ = s.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(s, maxHelloSize))
}

// respond runs the responder's side over s.
func (a *admitter) respond(s network.Stream) (admitHello, error) {
	remote := s.Conn().RemotePeer()
	_ = s.SetDeadline(a.now().Add(admitTimeout))
	r := bufio.NewReader(s)
	nonceI := make([]byte, nonceSize)
	if _, err := io.ReadFull(r, nonceI); err != nil {
		return admitHello{}, fmt.Errorf("reading challenge: %w", err)
	}
	nonceR := make([]byte, nonceSize)
	if _, err := rand.Read(nonceR); err != nil {
		return admitHello{}, err
	}
	out := append(append([]byte{}, nonceR...), admitMAC(a.secret, "resp", nonceI, nonceR, a.self, remote)...)
	if _, err := s.Write(out); err != nil {
		return admitHello{}, err
	}
	macI := make([]byte, sha256.Size)
	if n, err := io.ReadFull(r, macI); err != nil {
		// Instead of its proof, an initiator of another pool sends the
		// two-byte refusal frame (status, empty body) and closes.
		if n == 2 && admitStatus(macI[0]) == admitBadProof && macI[1] == 0 {
			return admitHello{}, fmt.Errorf("%w: %s refused our proof", ErrAdmissionRefused, remote)
		}
		return admitHello{}, fmt.Errorf("reading proof: %w", err)
	}
	body, err := readFrame(r, maxHelloSize)
	if err != nil {
		return admitHello{}, fmt.Errorf("reading hello: %w", err)
	}
	if !hmac.Equal(macI, admitMAC(a.secret, "init", nonceI, nonceR, remote, a.self)) {
		refuseOn(s, admitBadProof)
		return admitHello{}, fmt.Errorf("%w: %s cannot prove it holds the pool secret", ErrAdmissionRefused, remote)
	}
	var hello admitHello
	if err := json.Unmarshal(body, &hello); err != nil {
		return admitHello{}, fmt.Errorf("%w: bad hello from %s", ErrAdmissionRefused, remote)
	}
	if a.duplicate(remote, hello) {
		refuseOn(s, admitDuplicate)
		return admitHello{}, fmt.Errorf("%w: %s", errCopiedPeer, remote)
	}
	if _, err := s.Write(appendFrame([]byte{byte(admitOK)}, mustJSON(a.hello))); err != nil {
		return admitHello{}, err
	}
	status, _, err := readStatus(r)
	if err != nil {
		return admitHello{}, fmt.Errorf("reading verdict: %w", err)
	}
	if status == admitDuplicate {
		return admitHello{}, ErrDuplicateIdentity
	}
	if status != admitOK {
		return admitHello{}, fmt.Errorf("%w: %s refused us", ErrAdmissionRefused, remote)
	}
	return hello, nil
}

// appendFrame is head followed by a uvarint-length-prefixed body.
func appendFrame(head, body []byte) []byte {
	out := append([]byte{}, head...)
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...)
}

// readFrame reads a uvarint-length-prefixed body of at most max bytes.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("message of %d bytes exceeds %d", n, max)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}

func readStatus(r *bufio.Reader) (admitStatus, []byte, error) {
	st, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	body, err := readFrame(r, maxHelloSize)
	return admitStatus(st), body, err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled here
	}
	return b
}

// gater refuses connections from peers banned after a failed admission.
type gater struct{ a *admitter }

var _ connmgr.ConnectionGater = gater{}

func (g gater) InterceptPeerDial(p peer.ID) bool                    { return !g.a.isBanned(p) }
func (g gater) InterceptAddrDial(peer.ID, multiaddr.Multiaddr) bool { return true }
func (g gater) InterceptAccept(network.ConnMultiaddrs) bool         { return true }
func (g gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.a.isBanned(p)
}
func (g gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// gatedHost is the host the DHT and GossipSub see: every protocol handler
// they register waits for the remote peer's admission and resets the stream
// of a peer that is not admitted in time. An outsider gets no protocol but
// admission.
type gatedHost struct {
	host.Host
	a *admitter
}

func (g gatedHost) wrap(h network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		ctx, cancel := context.WithTimeout(context.Background(), admitTimeout)
		ok := g.a.waitAdmitted(ctx, s.Conn().RemotePeer())
		cancel()
		if !ok {
			_ = s.Reset()
			return
		}
		h(s)
	}
}

func (g gatedHost) SetStreamHandler(pid protocol.ID, h network.StreamHandler) {
	g.Host.SetStreamHandler(pid, g.wrap(h))
}

func (g gatedHost) SetStreamHandlerMatch(pid protocol.ID, m func(protocol.ID) bool, h network.StreamHandler) {
	g.Host.SetStreamHandlerMatch(pid, m, g.wrap(h))
}

func (a *admitter) admittedHello(id peer.ID) (admitHello, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, ok := a.admitted[id]
	return h, ok
}

// relayACL lets only admitted members reserve a slot on this node's relay
// service or connect through it, and only to admitted members: the relay
// carries pool traffic, never an outsider's.
type relayACL struct{ a *admitter }

func (r relayACL) AllowReserve(p peer.ID, _ multiaddr.Multiaddr) bool { return r.a.isAdmitted(p) }

func (r relayACL) AllowConnect(src peer.ID, _ multiaddr.Multiaddr, dest peer.ID) bool {
	return r.a.isAdmitted(src) && r.a.isAdmitted(dest)
}
