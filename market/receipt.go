package market

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Receipt limits.
const (
	// MaxReceiptSize bounds a signed receipt on the wire. A replica on 16
	// GPUs with 64-byte names encodes to under 2 KiB.
	MaxReceiptSize = 8 << 10
	// MaxReceiptGPUs bounds the GPUs of one receipt.
	MaxReceiptGPUs = 64
	// maxField bounds each string field (IDs, names, GPU UUIDs).
	maxField = 256
	// MaxSpanLimit is the longest interval any receipt may cover; a
	// ledger's MaxSpan is at most this.
	MaxSpanLimit = 24 * time.Hour
	// receiptVersion is the first byte of every encoded receipt.
	receiptVersion = 1
	// signingDomain separates receipt signatures from every other signature
	// a node key makes.
	signingDomain = "shoal/usage-receipt/v1\x00"
)

// GPUShare is a share of one GPU: Milli of its compute, 1..1000.
type GPUShare struct {
	UUID  string `json:"uuid"`
	Milli int64  `json:"milli"`
}

// Receipt says that Server ran Replica of Consumer's Deployment on GPUs
// from Start to End at Price per GPU-hour, for Amount. The serving node
// signs it; usage (GPU time) is never on the wire, it is recomputed from the
// interval and the shares.
type Receipt struct {
	Pool       string     `json:"pool"`       // pool ID the receipt is valid in
	Server     peer.ID    `json:"server"`     // node that served, and signed
	Consumer   peer.ID    `json:"consumer"`   // identity that owns the deployment
	Deployment string     `json:"deployment"` // deployment ID
	Replica    string     `json:"replica"`    // replica ID, unique in the deployment
	Model      string     `json:"model"`      // GPU model name, as priced
	GPUs       []GPUShare `json:"gpus"`       // sorted by UUID, each once
	// Start and End bound the interval, with millisecond precision.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Price is the price in force, per GPU-hour.
	Price Micro `json:"price_micro"`
	// Amount is Cost(Price, Usage()): what Consumer owes Server.
	Amount Micro `json:"amount_micro"`
	// Seq numbers the receipts of one serving node, from 1, each once.
	Seq uint64 `json:"seq"`
}

// Milli is the sum of the receipt's GPU shares.
func (r *Receipt) Milli() int64 {
	var m int64
	for _, g := range r.GPUs {
		m += g.Milli
	}
	return m
}

// Usage is the GPU time the receipt bills: its interval times its shares.
// It is only meaningful for a receipt that passed Check.
func (r *Receipt) Usage() GPUTime {
	return GPUTime(r.End.UnixMilli()-r.Start.UnixMilli()) * GPUTime(r.Milli())
}

// Check validates the receipt on its own: fields present, GPU shares in
// range and canonical, interval positive and at most maxSpan long, price in
// range and Amount equal to the recomputed cost. It does not check the
// signature, the pool or the clock. Errors are *RejectError.
func (r *Receipt) Check(maxSpan time.Duration) error {
	if err := r.checkFields(); err != nil {
		return err
	}
	if len(r.GPUs) == 0 {
		return reject(ReasonMalformed, "no GPUs")
	}
	for i, g := range r.GPUs {
		if g.Milli < 1 || g.Milli > 1000 {
			return reject(ReasonMilli, "%d milli on %q", g.Milli, g.UUID)
		}
		if i > 0 && r.GPUs[i-1].UUID >= g.UUID {
			return reject(ReasonMalformed, "GPUs not sorted or %q named twice", g.UUID)
		}
	}
	start, end := r.Start.UnixMilli(), r.End.UnixMilli()
	if start < 0 || end <= start {
		return reject(ReasonMalformed, "interval %d..%d ms", start, end)
	}
	if span := time.Duration(end-start) * time.Millisecond; span > maxSpan {
		return reject(ReasonMalformed, "interval of %s, at most %s", span, maxSpan)
	}
	if r.Price < 0 || r.Price > MaxPrice {
		return reject(ReasonPrice, "%s per GPU-hour", r.Price)
	}
	want, ok := Cost(r.Price, r.Usage())
	if !ok {
		return reject(ReasonAmount, "usage out of range")
	}
	if r.Amount != want {
		return reject(ReasonAmount, "claims %s, usage %.3f GPU-s at %s/GPU-h is %s", r.Amount, r.Usage().Seconds(), r.Price, want)
	}
	if r.Seq == 0 {
		return reject(ReasonMalformed, "zero sequence")
	}
	return nil
}

func (r *Receipt) checkFields() error {
	for _, f := range []struct{ name, v string }{
		{"pool", r.Pool}, {"deployment", r.Deployment}, {"replica", r.Replica}, {"model", r.Model},
	} {
		if f.v == "" || len(f.v) > maxField {
			return reject(ReasonMalformed, "%s of %d bytes", f.name, len(f.v))
		}
	}
	if r.Server == "" || r.Consumer == "" {
		return reject(ReasonMalformed, "no server or consumer")
	}
	if len(r.GPUs) > MaxReceiptGPUs {
		return reject(ReasonMalformed, "%d GPUs, at most %d", len(r.GPUs), MaxReceiptGPUs)
	}
	for _, g := range r.GPUs {
		if g.UUID == "" || len(g.UUID) > maxField {
			return reject(ReasonMalformed, "GPU UUID of %d bytes", len(g.UUID))
		}
	}
	return nil
}

// Sign encodes r canonically and signs it with key, which must be the key
// of r.Server. GPUs are sorted by UUID first; times keep millisecond
// precision. Sign refuses what Check(MaxSpanLimit) refuses.
func (r *Receipt) Sign(key crypto.PrivKey) ([]byte, error) {
	c := *r
	c.GPUs = slices.Clone(r.GPUs)
	slices.SortFunc(c.GPUs, func(a, b GPUShare) int { return strings.Compare(a.UUID, b.UUID) })
	if err := c.Check(MaxSpanLimit); err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("market: key: %w", err)
	}
	if id != c.Server {
		return nil, fmt.Errorf("%w: key is %s, receipt names server %s", ErrSignature, id, c.Server)
	}
	body := c.appendBody(make([]byte, 0, 256))
	sig, err := key.Sign(signingBytes(body))
	if err != nil {
		return nil, fmt.Errorf("market: signing receipt: %w", err)
	}
	out := binary.AppendUvarint(body, uint64(len(sig)))
	out = append(out, sig...)
	if len(out) > MaxReceiptSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(out), MaxReceiptSize)
	}
	return out, nil
}

func signingBytes(body []byte) []byte {
	b := make([]byte, 0, len(signingDomain)+len(body))
	return append(append(b, signingDomain...), body...)
}

// appendBody is the canonical encoding of everything the signature covers:
//
//	version(1) | str pool | str server | str consumer | str deployment |
//	str replica | str model | uvarint nGPUs | (str uuid | uvarint milli)* |
//	uvarint start_ms | uvarint end_ms | uvarint price | uvarint amount |
//	uvarint seq
//
// where str is uvarint length then bytes, server and consumer are peer ID
// bytes, and times are Unix milliseconds.
func (r *Receipt) appendBody(b []byte) []byte {
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = append(b, receiptVersion)
	str(r.Pool)
	str(string(r.Server))
	str(string(r.Consumer))
	str(r.Deployment)
	str(r.Replica)
	str(r.Model)
	b = binary.AppendUvarint(b, uint64(len(r.GPUs)))
	for _, g := range r.GPUs {
		str(g.UUID)
		b = binary.AppendUvarint(b, uint64(g.Milli))
	}
	b = binary.AppendUvarint(b, uint64(r.Start.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(r.End.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(r.Price))
	b = binary.AppendUvarint(b, uint64(r.Amount))
	return binary.AppendUvarint(b, r.Seq)
}

// decoded is a receipt with the parts of its encoding the ledger keeps.
type decoded struct {
	r    Receipt
	body []byte   // the signed bytes, without the domain
	sig  []byte   // the signature
	id   [32]byte // sha256 of body: the receipt's identity in a ledger
}

// Decode parses a signed receipt without checking its signature: use it to
// inspect, Verify to trust. It refuses anything above MaxReceiptSize and
// any encoding that is not canonical (so one receipt has one encoding).
func Decode(b []byte) (*Receipt, error) {
	d, err := decode(b)
	if err != nil {
		return nil, err
	}
	return &d.r, nil
}

// Verify decodes a signed receipt and checks its signature against the
// serving peer it names. It returns nothing it has not verified; the
// receipt's content is checked by Check and by a Ledger.
func Verify(b []byte) (*Receipt, error) {
	d, err := decode(b)
	if err != nil {
		return nil, err
	}
	if err := d.verify(); err != nil {
		return nil, err
	}
	return &d.r, nil
}

func (d *decoded) verify() error {
	pub, err := d.r.Server.ExtractPublicKey()
	if err != nil {
		return reject(ReasonSignature, "server %s carries no public key", d.r.Server)
	}
	ok, err := pub.Verify(signingBytes(d.body), d.sig)
	if err != nil || !ok {
		return reject(ReasonSignature, "not signed by %s", d.r.Server)
	}
	return nil
}

func decode(b []byte) (*decoded, error) {
	if len(b) > MaxReceiptSize {
		return nil, reject(ReasonTooLarge, "%d bytes, at most %d", len(b), MaxReceiptSize)
	}
	if len(b) == 0 || b[0] != receiptVersion {
		return nil, reject(ReasonMalformed, "not a version %d receipt", receiptVersion)
	}
	p := parser{b: b, off: 1}
	var r Receipt
	r.Pool = p.str("pool")
	server := p.str("server")
	consumer := p.str("consumer")
	r.Deployment = p.str("deployment")
	r.Replica = p.str("replica")
	r.Model = p.str("model")
	n := p.uint("GPU count")
	if p.err == nil && n > MaxReceiptGPUs {
		p.fail("%d GPUs, at most %d", n, MaxReceiptGPUs)
	}
	if p.err == nil && n > 0 {
		r.GPUs = make([]GPUShare, 0, n)
	}
	for i := uint64(0); p.err == nil && i < n; i++ {
		g := GPUShare{UUID: p.str("GPU UUID")}
		m := p.uint("milli")
		if m > 1<<31 {
			p.fail("milli %d", m)
		}
		g.Milli = int64(m)
		r.GPUs = append(r.GPUs, g)
	}
	start, end := p.uint("start"), p.uint("end")
	price, amount := p.uint("price"), p.uint("amount")
	r.Seq = p.uint("seq")
	bodyEnd := p.off
	sigLen := p.uint("signature length")
	if p.err != nil {
		return nil, p.err
	}
	if start > 1<<62 || end > 1<<62 || price > 1<<62 || amount > 1<<62 {
		return nil, reject(ReasonMalformed, "number out of range")
	}
	if sigLen != uint64(len(b)-p.off) || sigLen == 0 {
		return nil, reject(ReasonMalformed, "signature of %d bytes, %d left", sigLen, len(b)-p.off)
	}
	var err error
	if r.Server, err = peer.IDFromBytes([]byte(server)); err != nil {
		return nil, reject(ReasonMalformed, "server is not a peer ID")
	}
	if r.Consumer, err = peer.IDFromBytes([]byte(consumer)); err != nil {
		return nil, reject(ReasonMalformed, "consumer is not a peer ID")
	}
	r.Start = time.UnixMilli(int64(start)).UTC()
	r.End = time.UnixMilli(int64(end)).UTC()
	r.Price, r.Amount = Micro(price), Micro(amount)
	body := b[:bodyEnd]
	// One receipt, one encoding: varints must be minimal, which re-encoding
	// proves. (GPU order and the rest are Check's business.)
	if !bytes.Equal(r.appendBody(make([]byte, 0, len(body))), body) {
		return nil, reject(ReasonMalformed, "not canonical")
	}
	return &decoded{r: r, body: body, sig: b[p.off:], id: sha256.Sum256(body)}, nil
}

// parser reads uvarints and strings, remembering the first error.
type parser struct {
	b   []byte
	off int
	err error
}

func (p *parser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = reject(ReasonMalformed, format, args...)
	}
}

func (p *parser) uint(what string) uint64 {
	if p.err != nil {
		return 0
	}
	v, k := binary.Uvarint(p.b[p.off:])
	if k <= 0 {
		p.fail("%s truncated", what)
		return 0
	}
	p.off += k
	return v
}

func (p *parser) str(what string) string {
	n := p.uint(what)
	if p.err != nil {
		return ""
	}
	if n > maxField || n > uint64(len(p.b)-p.off) {
		p.fail("%s of %d bytes", what, n)
		return ""
	}
	s := string(p.b[p.off : p.off+int(n)])
	p.off += int(n)
	return s
}
