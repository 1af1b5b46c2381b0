package mesh

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalmesh/shoal/hardware"
)

// Record errors. A rejected record changes nothing.
var (
	ErrRecordMalformed = errors.New("mesh: malformed node record")
	ErrRecordSignature = errors.New("mesh: node record signature invalid")
	ErrRecordPeer      = errors.New("mesh: node record is for another peer")
	ErrRecordStale     = errors.New("mesh: node record is stale")
	ErrRecordTooLarge  = errors.New("mesh: node record too large")
)

const (
	recordMagic = "SHR1"
	// maxRecordSize bounds a signed record on the wire. A node with 16 GPUs,
	// each with MIG instances and NVLinks, encodes to about 12 KiB.
	maxRecordSize = 64 << 10
	// recordNamespace is the DHT key namespace of node records:
	// /shoalnode/<peer ID bytes>.
	recordNamespace = "shoalnode"
	// RecordMaxAge is how old a record may be before the DHT and members
	// refuse it. Live nodes republish every RecordRepublish.
	RecordMaxAge = time.Hour
	// RecordRepublish is how often a node republishes an unchanged record.
	RecordRepublish = 10 * time.Minute
	// recordMaxSkew is how far in the future a record's time may be.
	recordMaxSkew = 10 * time.Minute
)

// Record is what a node says about itself. Each node is the only writer of
// its own record; it is signed with the node's key, versioned by Seq, and
// published in the pool's DHT under the node's peer ID.
type Record struct {
	PeerID      string             `json:"peer_id"`
	Seq         uint64             `json:"seq"`      // strictly increasing per node; higher wins
	Instance    string             `json:"instance"` // random per daemon start
	Fingerprint string             `json:"fingerprint,omitempty"`
	Name        string             `json:"name"`
	Addrs       []string           `json:"addrs"`
	Inventory   hardware.Inventory `json:"inventory"`
	Price       Price              `json:"price"`
	StartedAt   time.Time          `json:"started_at"`
	PublishedAt time.Time          `json:"published_at"`
	Version     string             `json:"version"`
	// Models are the models this node holds complete in its weight cache
	// (at most MaxRecordModels, most recently used first), so any member
	// can map a name to an ID and place replicas near their weights.
	Models []ModelRef `json:"models,omitempty"`
	// Free is the capacity the node's ledger has not promised (see
	// FreeCapacity); nil until the node announces it.
	Free *FreeCapacity `json:"free,omitempty"`
}

// MaxRecordModels bounds Record.Models, keeping a record well under its
// 64 KiB cap: 64 entries of an ID (~60 B), a name (at most 256 B) and a
// size take under 24 KiB, beside an inventory of at most about 12 KiB.
const MaxRecordModels = 64

// ModelRef names one model a node holds: its content ID, its human name
// when it has one, and its size in bytes.
type ModelRef struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
}

// Price is what a node asks for its GPUs, in credits per GPU-hour. Zero in
// a private pool.
type Price struct {
	// PerGPUHour is the price of a GPU-hour on a model not in Models.
	PerGPUHour float64 `json:"per_gpu_hour"`
	Currency   string  `json:"currency,omitempty"`
	// Models maps a GPU model name, as the inventory reports it, to its
	// price per GPU-hour (at most MaxPriceModels entries).
	Models map[string]float64 `json:"models,omitempty"`
}

// MaxPriceModels bounds Price.Models.
const MaxPriceModels = 64

// Ask is the price of a GPU-hour on model.
func (p Price) Ask(model string) float64 {
	if v, ok := p.Models[model]; ok {
		return v
	}
	return p.PerGPUHour
}

func (p Price) validate() error {
	if len(p.Models) > MaxPriceModels {
		return fmt.Errorf("%w: %d priced GPU models, at most %d", ErrRecordMalformed, len(p.Models), MaxPriceModels)
	}
	ok := func(v float64) bool { return v >= 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }
	if !ok(p.PerGPUHour) {
		return fmt.Errorf("%w: price %g", ErrRecordMalformed, p.PerGPUHour)
	}
	for m, v := range p.Models {
		if !ok(v) {
			return fmt.Errorf("%w: price %g for %q", ErrRecordMalformed, v, m)
		}
	}
	return nil
}

// recordKey is the DHT key of a peer's record.
func recordKey(id peer.ID) string {
	return "/" + recordNamespace + "/" + string(id)
}

// signingBytes binds a record payload to its pool, so a record cannot be
// replayed into another pool.
func signingBytes(poolID string, payload []byte) []byte {
	b := make([]byte, 0, len(payload)+64)
	b = append(b, "shoal/node-record/v1\x00"...)
	b = append(b, poolID...)
	b = append(b, 0)
	return append(b, payload...)
}

// SignRecord encodes and signs r with key for the pool poolID.
// Layout: "SHR1" | uvarint len | JSON payload | uvarint len | signature.
func SignRecord(key crypto.PrivKey, poolID string, r *Record) ([]byte, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("mesh: encoding record: %w", err)
	}
	sig, err := key.Sign(signingBytes(poolID, payload))
	if err != nil {
		return nil, fmt.Errorf("mesh: signing record: %w", err)
	}
	out := make([]byte, 0, len(recordMagic)+len(payload)+len(sig)+20)
	out = append(out, recordMagic...)
	out = binary.AppendUvarint(out, uint64(len(payload)))
	out = append(out, payload...)
	out = binary.AppendUvarint(out, uint64(len(sig)))
	out = append(out, sig...)
	if len(out) > maxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrRecordTooLarge, len(out), maxRecordSize)
	}
	return out, nil
}

// splitRecord separates payload and signature, checking the framing only.
func splitRecord(b []byte) (payload, sig []byte, err error) {
	if len(b) > maxRecordSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, at most %d", ErrRecordTooLarge, len(b), maxRecordSize)
	}
	if !bytes.HasPrefix(b, []byte(recordMagic)) {
		return nil, nil, fmt.Errorf("%w: bad magic", ErrRecordMalformed)
	}
	rest := b[len(recordMagic):]
	next := func(what string) ([]byte, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return nil, fmt.Errorf("%w: %s truncated", ErrRecordMalformed, what)
		}
		field := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		return field, nil
	}
	if payload, err = next("payload"); err != nil {
		return nil, nil, err
	}
	if sig, err = next("signature"); err != nil {
		return nil, nil, err
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("%w: %d trailing bytes", ErrRecordMalformed, len(rest))
	}
	return payload, sig, nil
}

// VerifyRecord decodes a signed record and checks that it is well formed,
// signed by the key of want (the peer it claims to be), for pool poolID, and
// no older than RecordMaxAge at now. It returns nothing it has not verified.
func VerifyRecord(b []byte, poolID string, want peer.ID, now time.Time) (*Record, error) {
	payload, sig, err := splitRecord(b)
	if err != nil {
		return nil, err
	}
	pub, err := want.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: peer ID %s carries no public key", ErrRecordSignature, want)
	}
	ok, err := pub.Verify(signingBytes(poolID, payload), sig)
	if err != nil || !ok {
		return nil, ErrRecordSignature
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecordMalformed, err)
	}
	if r.PeerID != want.String() {
		return nil, fmt.Errorf("%w: record names %q, signed by %s", ErrRecordPeer, r.PeerID, want)
	}
	if r.Seq == 0 {
		return nil, fmt.Errorf("%w: zero sequence", ErrRecordMalformed)
	}
	if err := r.Price.validate(); err != nil {
		return nil, err
	}
	if age := now.Sub(r.PublishedAt); age > RecordMaxAge {
		return nil, fmt.Errorf("%w: published %s ago", ErrRecordStale, age.Round(time.Second))
	} else if age < -recordMaxSkew {
		return nil, fmt.Errorf("%w: published %s in the future", ErrRecordMalformed, (-age).Round(time.Second))
	}
	return &r, nil
}

// recordValidator checks node records for the DHT: the key names the signer,
// the signature holds, the record is fresh; Select keeps the highest Seq.
type recordValidator struct {
	poolID string
	now    func() time.Time
	reject func(reason string)
}

func (v recordValidator) peerOf(key string) (peer.ID, error) {
	ns, rest, ok := strings.Cut(strings.TrimPrefix(key, "/"), "/")
	if !ok || ns != recordNamespace {
		return "", fmt.Errorf("%w: key outside namespace %q", ErrRecordMalformed, recordNamespace)
	}
	id, err := peer.IDFromBytes([]byte(rest))
	if err != nil {
		return "", fmt.Errorf("%w: key holds no peer ID", ErrRecordMalformed)
	}
	return id, nil
}

func (v recordValidator) Validate(key string, value []byte) error {
	id, err := v.peerOf(key)
	if err == nil {
		_, err = VerifyRecord(value, v.poolID, id, v.now())
	}
	if err != nil && v.reject != nil {
		v.reject(rejectReason(err))
	}
	return err
}

func (v recordValidator) Select(key string, values [][]byte) (int, error) {
	id, err := v.peerOf(key)
	if err != nil {
		return 0, err
	}
	best, bestSeq := -1, uint64(0)
	for i, b := range values {
		r, err := VerifyRecord(b, v.poolID, id, v.now())
		if err != nil {
			continue
		}
		if best < 0 || r.Seq > bestSeq {
			best, bestSeq = i, r.Seq
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("%w: no valid record among %d", ErrRecordMalformed, len(values))
	}
	return best, nil
}

// rejectReason names a record error for metrics.
func rejectReason(err error) string {
	switch {
	case errors.Is(err, ErrRecordSignature):
		return "signature"
	case errors.Is(err, ErrRecordPeer):
		return "foreign_peer"
	case errors.Is(err, ErrRecordStale):
		return "stale"
	case errors.Is(err, ErrRecordTooLarge):
		return "too_large"
	default:
		return "malformed"
	}
}
