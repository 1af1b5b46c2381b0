package market

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestReceiptRoundTrip(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	r := receipt(srv, con, 7, t0)
	r.GPUs = []GPUShare{{UUID: "GPU-b", Milli: 1000}, {UUID: "GPU-a", Milli: 250}}
	r.fixAmount()
	b := mustSign(t, r, srv.key)
	if b[0] != receiptVersion {
		t.Fatalf("first byte %d; want version %d", b[0], receiptVersion)
	}
	got, err := Verify(b)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := r
	want.GPUs = []GPUShare{{UUID: "GPU-a", Milli: 250}, {UUID: "GPU-b", Milli: 1000}}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Verify(Sign(r)) = %+v; want %+v", *got, want)
	}
	if u := got.Usage(); u != 1250*60*1000 {
		t.Errorf("Usage() = %d; want %d", u, 1250*60*1000)
	}
	if s := got.Usage().Seconds(); s != 75 {
		t.Errorf("Usage().Seconds() = %v; want 75 GPU-seconds", s)
	}
	// Signing the decoded receipt again gives the same bytes: one encoding.
	if b2 := mustSign(t, *got, srv.key); !bytes.Equal(b, b2) {
		t.Error("re-signing a decoded receipt changed its bytes")
	}
}

func TestSignRefuses(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	for _, tc := range []struct {
		name string
		mod  func(*Receipt)
		want error
	}{
		{"wrong key", func(r *Receipt) { r.Server = con.id }, ErrSignature},
		{"inflated amount", func(r *Receipt) { r.Amount++ }, ErrAmount},
		{"milli above 1000", func(r *Receipt) { r.GPUs[0].Milli = 1001; r.fixAmount() }, ErrMilli},
		{"GPU twice", func(r *Receipt) { r.GPUs = append(r.GPUs, r.GPUs[0]); r.fixAmount() }, ErrMalformed},
		{"empty interval", func(r *Receipt) { r.End = r.Start; r.fixAmount() }, ErrMalformed},
		{"no pool", func(r *Receipt) { r.Pool = "" }, ErrMalformed},
		{"zero seq", func(r *Receipt) { r.Seq = 0 }, ErrMalformed},
		{"negative price", func(r *Receipt) { r.Price = -1; r.Amount = 0 }, ErrPrice},
	} {
		r := receipt(srv, con, 1, t0)
		tc.mod(&r)
		if _, err := r.Sign(srv.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: Sign = %v; want %v", tc.name, err, tc.want)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	srv, con := newIdent(t, 1), newIdent(t, 2)
	good := mustSign(t, receipt(srv, con, 1, t0), srv.key)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 2
		return b
	}
	// A non-minimal varint for the GPU count: 0x81 0x00 instead of 0x01.
	d, err := decode(good)
	if err != nil {
		t.Fatal(err)
	}
	var prefix []byte
	for _, s := range []string{d.r.Pool, string(d.r.Server), string(d.r.Consumer), d.r.Deployment, d.r.Replica, d.r.Model} {
		prefix = binary.AppendUvarint(prefix, uint64(len(s)))
		prefix = append(prefix, s...)
	}
	at := 1 + len(prefix)
	overlong := append(append(bytes.Clone(good[:at]), 0x81, 0x00), good[at+1:]...)

	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"wrong version", append([]byte{2}, good[1:]...), ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"trailing byte", append(bytes.Clone(good), 0), ErrMalformed},
		{"too large", make([]byte, MaxReceiptSize+1), ErrTooLarge},
		{"flipped signature bit", flip(len(good) - 1), ErrSignature},
		{"flipped amount bit", flip(len(d.body) - 2), ErrSignature},
		{"non-canonical varint", overlong, ErrMalformed},
	} {
		if _, err := Verify(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v; want %v", tc.name, err, tc.want)
		}
	}
}

// FuzzDecodeReceipt: Decode never panics, never accepts more than
// MaxReceiptSize, and anything it accepts is canonical: encoding the
// decoded receipt gives back the signed body.
func FuzzDecodeReceipt(f *testing.F) {
	srv, con := newIdent(f, 1), newIdent(f, 2)
	r := receipt(srv, con, 1, t0)
	f.Add(mustSign(f, r, srv.key))
	r.GPUs = []GPUShare{{UUID: "a", Milli: 1}, {UUID: "b", Milli: 1000}}
	r.Seq, r.End = 1<<40, r.Start.Add(time.Hour)
	r.fixAmount()
	f.Add(mustSign(f, r, srv.key))
	f.Add([]byte{1})
	f.Add([]byte{1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decode(b)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("decode error %v has no reason", err)
			}
			return
		}
		if len(b) > MaxReceiptSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if body := d.r.appendBody(nil); !bytes.Equal(body, d.body) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", body, d.body)
		}
		_ = d.r.Check(DefaultMaxSpan) // must not panic
		_ = d.verify()
	})
}
