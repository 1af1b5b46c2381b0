package mesh

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// FuzzAdmissionFrames: what either side of admission reads after the fixed
// size nonce and MAC (a verdict: status byte, framed hello), from a peer
// that need not hold the secret: no input panics the readers or the hello
// decoder, and no frame longer than maxHelloSize is accepted.
func FuzzAdmissionFrames(f *testing.F) {
	f.Add(appendFrame([]byte{byte(admitOK)}, mustJSON(admitHello{Instance: "i", Fingerprint: "f", Name: "n"})))
	f.Add(appendFrame([]byte{byte(admitBadProof)}, nil))
	f.Add([]byte{byte(admitDuplicate), 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		_, body, err := readStatus(r)
		if err != nil {
			return
		}
		if len(body) > maxHelloSize {
			t.Fatalf("accepted a hello of %d bytes; at most %d", len(body), maxHelloSize)
		}
		var hello admitHello
		_ = json.Unmarshal(body, &hello)
	})
}

// FuzzSyncStream: a membership sync answer (/shoal/sync/1.0.0) read the
// way syncFrom reads it (framed peer IDs and records, each record
// verified): no input panics it, and a record is accepted only for the
// peer its frame names.
func FuzzSyncStream(f *testing.F) {
	key, id := newKey(f)
	now := time.Unix(1_800_000_000, 0)
	good, _ := SignRecord(key, "p", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now})
	f.Add(appendFrame(appendFrame(nil, []byte(id)), good))
	f.Add(append(appendFrame(appendFrame(nil, []byte(id)), good), appendFrame(nil, []byte("x"))...))
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for {
			idb, err := readFrame(r, 128)
			if err != nil {
				return
			}
			raw, err := readFrame(r, maxRecordSize)
			if err != nil {
				return
			}
			p, err := peer.IDFromBytes(idb)
			if err != nil {
				continue
			}
			rec, err := VerifyRecord(raw, "p", p, now)
			if err == nil && rec.PeerID != p.String() {
				t.Fatalf("accepted a record of %s framed as %s", rec.PeerID, p)
			}
		}
	})
}
