package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/market"
)

// ReceiptsProtocol exchanges usage receipts between members. One stream
// is one exchange of three frames (uvarint length, JSON receiptsMsg):
//
//	opener → answerer: its heads (market.ServerHead per serving node) and
//	                   the receipts it pushes (just cut; none on a sync)
//	answerer → opener: its heads and the receipts of every serving node
//	                   whose head differs from the opener's
//	opener → answerer: the receipts of every serving node whose head
//	                   differs from the answerer's
//
// then a one-byte acknowledgement. Heads are small (one per serving node),
// so comparing two ledgers costs one round trip, and only the serving nodes
// that differ move receipts: where the other side holds a node's receipts
// 1..n without a gap, only those above n. Every receipt received goes
// through market.Ledger.Add, which verifies it; nothing a peer says is
// trusted. A frame carries at most maxExchangeReceipts receipts and
// maxExchangeBytes of them: a ledger far behind catches up over several
// exchanges.
const (
	ReceiptsProtocol = protocol.ID("/shoal/receipts/1.0.0")
	// maxReceiptsFrame bounds one frame: the receipts (base64 in JSON)
	// plus the heads.
	maxReceiptsFrame = 4 << 20
	// maxExchangeReceipts and maxExchangeBytes bound the receipts one
	// frame carries.
	maxExchangeReceipts = 2048
	maxExchangeBytes    = 2 << 20
	// maxHeads bounds the heads of one frame: serving nodes a pool has
	// known.
	maxHeads = 4096
	// exchangeTimeout bounds one exchange.
	exchangeTimeout = 10 * time.Second
)

// ErrBadReceipts: a receipts frame that is not well formed (not JSON of
// the expected shape, or beyond the protocol's bounds).
var ErrBadReceipts = errors.New("node: bad receipts frame")

// receiptsMsg is one frame of ReceiptsProtocol.
type receiptsMsg struct {
	Heads    []market.ServerHead `json:"heads,omitempty"`
	Receipts [][]byte            `json:"receipts,omitempty"`
}

// decodeReceiptsMsg parses one frame and checks its bounds. The receipts
// themselves are left to the ledger to verify.
func decodeReceiptsMsg(b []byte) (receiptsMsg, error) {
	var m receiptsMsg
	if len(b) > maxReceiptsFrame {
		return m, fmt.Errorf("%w: %d bytes, at most %d", ErrBadReceipts, len(b), maxReceiptsFrame)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return receiptsMsg{}, fmt.Errorf("%w: %v", ErrBadReceipts, err)
	}
	if dec.More() {
		return receiptsMsg{}, fmt.Errorf("%w: trailing data", ErrBadReceipts)
	}
	if len(m.Heads) > maxHeads || len(m.Receipts) > maxExchangeReceipts {
		return receiptsMsg{}, fmt.Errorf("%w: %d heads and %d receipts, at most %d and %d",
			ErrBadReceipts, len(m.Heads), len(m.Receipts), maxHeads, maxExchangeReceipts)
	}
	seen := make(map[peer.ID]bool, len(m.Heads))
	for _, h := range m.Heads {
		if h.Server == "" || seen[h.Server] || h.Receipts < 0 {
			return receiptsMsg{}, fmt.Errorf("%w: head of %q", ErrBadReceipts, h.Server)
		}
		seen[h.Server] = true
	}
	for _, r := range m.Receipts {
		if len(r) == 0 || len(r) > market.MaxReceiptSize {
			return receiptsMsg{}, fmt.Errorf("%w: a receipt of %d bytes", ErrBadReceipts, len(r))
		}
	}
	return m, nil
}

// bounded is the longest prefix of raws within one frame's bounds; the
// rest waits for a sync.
func bounded(raws [][]byte) [][]byte {
	size := 0
	for i, r := range raws {
		size += len(r)
		if i == maxExchangeReceipts || size > maxExchangeBytes {
			return raws[:i]
		}
	}
	return raws
}

func readReceiptsMsg(r *bufio.Reader) (receiptsMsg, error) {
	b, err := readFrame(r, maxReceiptsFrame)
	if err != nil {
		return receiptsMsg{}, fmt.Errorf("%w: %w", ErrBadReceipts, err)
	}
	return decodeReceiptsMsg(b)
}

// heads is this node's ledger digest per serving node.
func (c *credits) heads() []market.ServerHead {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.led.Snapshot().Heads
}

// missing is what a peer with heads theirs lacks, as far as the heads
// tell, within the frame bounds.
func (c *credits) missing(theirs []market.ServerHead) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	mine := c.led.Snapshot()
	other := market.Snapshot{Heads: theirs}
	byServer := make(map[peer.ID]market.ServerHead, len(theirs))
	for _, h := range theirs {
		byServer[h.Server] = h
	}
	var out [][]byte
	size := 0
	for _, s := range mine.Differ(other) {
		room := maxExchangeReceipts - len(out)
		if room <= 0 {
			break
		}
		var rs [][]byte
		// Receipts 1..n without a gap: the peer lacks only those above n
		// (unless it kept another receipt for one of those numbers, a
		// replay; then it gets them all).
		if h, ok := byServer[s]; ok && h.MaxSeq > 0 && uint64(h.Receipts) == h.MaxSeq {
			rs = c.led.ReceiptsOf(s, h.MaxSeq, room)
		}
		if len(rs) == 0 {
			rs = c.led.ReceiptsOf(s, 0, room)
		}
		for _, r := range rs {
			if size+len(r) > maxExchangeBytes {
				return out
			}
			size += len(r)
			out = append(out, r)
		}
	}
	return out
}

// receive verifies receipts a peer sent into the ledger.
func (c *credits) receive(from peer.ID, raws [][]byte) {
	if len(raws) == 0 {
		return
	}
	if kept := c.add(raws); len(kept) > 0 {
		c.log.Debug("receipts received", "from", from, "sent", len(raws), "kept", len(kept))
	}
}

// exchange runs one exchange with member p, opening with push.
func (c *credits) exchange(ctx context.Context, p peer.ID, push [][]byte) error {
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	st, err := c.cfg.Streams.OpenStream(ctx, p, ReceiptsProtocol)
	if err != nil {
		return err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(exchangeTimeout))
	push = bounded(push)
	if err := writeFrame(st, receiptsMsg{Heads: c.heads(), Receipts: push}); err != nil {
		st.Reset()
		return err
	}
	r := bufio.NewReader(st)
	answer, err := readReceiptsMsg(r)
	if err != nil {
		st.Reset()
		return err
	}
	c.receive(p, answer.Receipts)
	if err := writeFrame(st, receiptsMsg{Receipts: c.missing(answer.Heads)}); err != nil {
		st.Reset()
		return err
	}
	_ = st.CloseWrite()
	var ack [1]byte
	_, _ = r.Read(ack[:])
	return nil
}

// handleStream answers one exchange a member opened.
func (c *credits) handleStream(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(exchangeTimeout))
	from := st.Conn().RemotePeer()
	r := bufio.NewReader(st)
	open, err := readReceiptsMsg(r)
	if err != nil {
		c.log.Debug("receipts exchange refused", "from", from, "err", err)
		st.Reset()
		return
	}
	c.receive(from, open.Receipts)
	if err := writeFrame(st, receiptsMsg{Heads: c.heads(), Receipts: c.missing(open.Heads)}); err != nil {
		st.Reset()
		return
	}
	last, err := readReceiptsMsg(r)
	if err != nil {
		st.Reset()
		return
	}
	c.receive(from, last.Receipts)
	_, _ = st.Write([]byte{1})
}
