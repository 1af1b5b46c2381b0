package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func TestRecordVerify(t *testing.T) {
	now := time.Now()
	key, id := newKey(t)
	otherKey, other := newKey(t)
	good := &Record{PeerID: id.String(), Seq: 7, Name: "a", PublishedAt: now}
	sign := func(k crypto.PrivKey, pool string, r *Record) []byte {
		b, err := SignRecord(k, pool, r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := sign(key, "pool", good)
	tampered := bytes.Replace(valid, []byte(`"a"`), []byte(`"b"`), 1)
	cases := []struct {
		name string
		b    []byte
		want peer.ID
		err  error
	}{
		{"valid", valid, id, nil},
		{"other pool", sign(key, "pool2", good), id, ErrRecordSignature},
		{"forged by another key", sign(otherKey, "pool", good), id, ErrRecordSignature},
		{"tampered payload", tampered, id, ErrRecordSignature},
		{"signed by other, claims us", sign(otherKey, "pool", good), other, ErrRecordPeer},
		{"stale", sign(key, "pool", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now.Add(-2 * RecordMaxAge)}), id, ErrRecordStale},
		{"future", sign(key, "pool", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now.Add(time.Hour)}), id, ErrRecordMalformed},
		{"zero seq", sign(key, "pool", &Record{PeerID: id.String(), PublishedAt: now}), id, ErrRecordMalformed},
		{"priced", sign(key, "pool", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now, Price: Price{PerGPUHour: 2, Models: map[string]float64{"RTX 4090": 36}}}), id, nil},
		{"negative price", sign(key, "pool", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now, Price: Price{PerGPUHour: -1}}), id, ErrRecordMalformed},
		{"negative model price", sign(key, "pool", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now, Price: Price{Models: map[string]float64{"x": -3}}}), id, ErrRecordMalformed},
		{"too many priced models", sign(key, "pool", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now, Price: Price{Models: manyPrices(MaxPriceModels + 1)}}), id, ErrRecordMalformed},
		{"bad magic", append([]byte("XXXX"), valid[4:]...), id, ErrRecordMalformed},
		{"truncated", valid[:len(valid)-5], id, ErrRecordMalformed},
		{"oversized", append([]byte(recordMagic), make([]byte, maxRecordSize)...), id, ErrRecordTooLarge},
	}
	for _, c := range cases {
		_, err := VerifyRecord(c.b, "pool", c.want, now)
		if !errors.Is(err, c.err) && !(c.err == nil && err == nil) {
			t.Errorf("VerifyRecord(%s) = %v; want %v", c.name, err, c.err)
		}
	}
}

func TestRecordValidatorSelectsNewest(t *testing.T) {
	now := time.Now()
	key, id := newKey(t)
	otherKey, _ := newKey(t)
	var rejected []string
	v := recordValidator{poolID: "p", now: func() time.Time { return now }, reject: func(r string) { rejected = append(rejected, r) }}
	mk := func(k crypto.PrivKey, seq uint64) []byte {
		b, _ := SignRecord(k, "p", &Record{PeerID: id.String(), Seq: seq, PublishedAt: now})
		return b
	}
	vals := [][]byte{mk(key, 3), mk(otherKey, 99), mk(key, 9), mk(key, 5)}
	i, err := v.Select(recordKey(id), vals)
	if err != nil || i != 2 {
		t.Errorf("Select = %d, %v; want 2 (seq 9; the forged seq 99 ignored)", i, err)
	}
	if err := v.Validate(recordKey(id), vals[1]); !errors.Is(err, ErrRecordSignature) {
		t.Errorf("Validate(forged) = %v; want ErrRecordSignature", err)
	}
	if err := v.Validate("/other/"+string(id), vals[0]); !errors.Is(err, ErrRecordMalformed) {
		t.Errorf("Validate(key outside namespace) = %v; want ErrRecordMalformed", err)
	}
	if len(rejected) != 2 || rejected[0] != "signature" {
		t.Errorf("rejections counted %v; want [signature malformed]", rejected)
	}
}

func TestHeartbeatValidation(t *testing.T) {
	n := &Node{met: newMeshMetrics(nil, nil), log: discardLogger()}
	msg := func(data []byte) *pubsub.Message { return &pubsub.Message{Message: &pb.Message{Data: data}} }
	cases := []struct {
		name string
		data []byte
		want pubsub.ValidationResult
	}{
		{"good", mustJSON(heartbeat{Instance: "i", Seq: 1}), pubsub.ValidationAccept},
		{"oversized", []byte(`{"i":"` + strings.Repeat("x", maxHeartbeatSize) + `","s":1}`), pubsub.ValidationReject},
		{"not json", []byte("hello"), pubsub.ValidationReject},
		{"unknown field", []byte(`{"i":"x","s":1,"evil":true}`), pubsub.ValidationReject},
		{"zero seq", []byte(`{"i":"x"}`), pubsub.ValidationReject},
	}
	for _, c := range cases {
		if got := n.validateHeartbeat(context.Background(), "", msg(c.data)); got != c.want {
			t.Errorf("validateHeartbeat(%s) = %v; want %v", c.name, got, c.want)
		}
	}
}

func TestAdmitMACBindsPeersAndDirection(t *testing.T) {
	s := []byte("secret")
	ni, nr := []byte("ni"), []byte("nr")
	base := admitMAC(s, "resp", ni, nr, "a", "b")
	for name, other := range map[string][]byte{
		"swapped peers":  admitMAC(s, "resp", ni, nr, "b", "a"),
		"other label":    admitMAC(s, "init", ni, nr, "a", "b"),
		"other nonce":    admitMAC(s, "resp", []byte("nx"), nr, "a", "b"),
		"other secret":   admitMAC([]byte("secreT"), "resp", ni, nr, "a", "b"),
		"split peer ids": admitMAC(s, "resp", ni, nr, "ab", ""),
	} {
		if bytes.Equal(base, other) {
			t.Errorf("MAC with %s equals the original; want distinct", name)
		}
	}
}

func FuzzVerifyRecord(f *testing.F) {
	key, id := newKey(f)
	now := time.Now()
	good, _ := SignRecord(key, "p", &Record{PeerID: id.String(), Seq: 1, PublishedAt: now})
	f.Add(good)
	f.Add([]byte(recordMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := VerifyRecord(b, "p", id, now)
		if err == nil && (r == nil || r.PeerID != id.String()) {
			t.Fatalf("accepted a record not naming its signer: %+v", r)
		}
	})
}

func FuzzHeartbeat(f *testing.F) {
	n := &Node{met: newMeshMetrics(nil, nil), log: discardLogger()}
	f.Add(mustJSON(heartbeat{Instance: "i", Seq: 1, Load: Load{GPUUtilPct: []int{3}}}))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := &pubsub.Message{Message: &pb.Message{Data: b}}
		if n.validateHeartbeat(context.Background(), "", m) == pubsub.ValidationAccept {
			hb := m.ValidatorData.(heartbeat)
			if hb.Instance == "" || hb.Seq == 0 || len(b) > maxHeartbeatSize {
				t.Fatalf("accepted an invalid heartbeat %+v", hb)
			}
		}
	})
}

func manyPrices(n int) map[string]float64 {
	m := make(map[string]float64, n)
	for i := range n {
		m[fmt.Sprintf("GPU %d", i)] = 1
	}
	return m
}

func TestPriceAsk(t *testing.T) {
	p := Price{PerGPUHour: 2, Models: map[string]float64{"RTX 4090": 36}}
	for model, want := range map[string]float64{"RTX 4090": 36, "A100 80GB": 2} {
		if got := p.Ask(model); got != want {
			t.Errorf("Ask(%q) = %g; want %g", model, got, want)
		}
	}
}
