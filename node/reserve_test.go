package node

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

func testLedger(t *testing.T, home string, now *time.Time) *ledgerServer {
	t.Helper()
	c := ledger.Capacity{GPUs: []ledger.GPU{{UUID: "GPU-a", VRAMBytes: 24 << 30}}, CPUMilli: 4000, MemoryBytes: 8 << 30}
	s, err := openLedger(home, c, func() time.Time { return *now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reserveCall(id string, milli int, lease time.Duration) coordinator.Call {
	return coordinator.Call{Op: coordinator.OpReserve, LeaseMillis: lease.Milliseconds(), Reservation: &coordinator.Reservation{
		ID: id, Deployment: "d", Holder: "h",
		Slot: scheduler.Slot{GPUs: []scheduler.GPUShare{{UUID: "GPU-a", Milli: milli, VRAM: 4 << 30}}},
	}}
}

// The node admits against its ledger, refuses with the resource that ran
// short, and keeps committed reservations across a restart.
func TestLedgerServerAdmitsRefusesAndPersists(t *testing.T) {
	home := t.TempDir()
	now := time.Unix(1_800_000_000, 0)
	s := testLedger(t, home, &now)
	if a := s.serve(reserveCall("r1#0/1", 600, 10*time.Second)); a.Refused != nil || a.Error != "" || a.Free.GPUs[0].Milli != 400 {
		t.Fatalf("reserve r1 = %+v; want admitted with 400 milli left", a)
	}
	a := s.serve(reserveCall("r2#0/1", 600, 10*time.Second))
	if a.Refused == nil || a.Refused.Resource != "gpu" || a.Refused.Want != 600 || a.Refused.Free != 400 {
		t.Fatalf("reserve r2 = %+v; want refused: gpu want 600 free 400", a)
	}
	if a := s.serve(coordinator.Call{Op: coordinator.OpCommit, IDs: []string{"r1#0/1", "nope"}, LeaseMillis: 60_000}); len(a.Unknown) != 1 || a.Unknown[0] != "nope" {
		t.Fatalf("commit = %+v; want nope unknown", a)
	}
	s.serve(reserveCall("held#0/1", 100, 5*time.Second))

	// Restart 20 s later: the committed one stays, the held one expired.
	now = now.Add(20 * time.Second)
	s2 := testLedger(t, home, &now)
	l := s2.serve(coordinator.Call{Op: coordinator.OpList, Deployment: "d"})
	if len(l.Reservations) != 1 || l.Reservations[0].ID != "r1#0/1" || l.Reservations[0].State != coordinator.Committed {
		t.Fatalf("after restart: %+v; want only the committed r1", l.Reservations)
	}
	now = now.Add(time.Minute)
	if gone := s2.expire(); len(gone) != 1 {
		t.Errorf("expire after the lease = %v; want r1", gone)
	}
}

// A reserve that names victims evicts batch work of lower priority, and
// nothing else; the list says each reservation's class and age.
func TestLedgerServerEvicts(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := testLedger(t, t.TempDir(), &now)
	batch := reserveCall("train#0/1", 700, time.Minute)
	batch.Reservation.Class = scheduler.Batch.String()
	serving := reserveCall("serve#0/1", 300, time.Minute)
	serving.Reservation.Class, serving.Reservation.Priority = scheduler.Inference.String(), 10
	for _, c := range []coordinator.Call{batch, serving} {
		if a := s.serve(c); a.Refused != nil || a.Error != "" {
			t.Fatalf("reserve %s = %+v", c.Reservation.ID, a)
		}
	}
	l := s.serve(coordinator.Call{Op: coordinator.OpList})
	if len(l.Reservations) != 2 || l.Reservations[1].Class != "batch" || l.Reservations[0].Class != "inference" || !l.Reservations[1].Since.Equal(now) {
		t.Fatalf("list = %+v; want serve (inference) and train (batch, since now)", l.Reservations)
	}
	want := reserveCall("new#0/1", 700, time.Minute)
	want.Reservation.Class, want.Reservation.Priority = scheduler.Inference.String(), 10
	want.Evict = []string{"serve#0/1"}
	if a := s.serve(want); a.Error == "" || len(a.Evicted) != 0 {
		t.Fatalf("reserve evicting inference work = %+v; want an error and nothing evicted", a)
	}
	want.Evict = []string{"train#0/1"}
	a := s.serve(want)
	if a.Refused != nil || a.Error != "" || len(a.Evicted) != 1 || a.Evicted[0] != "train#0/1" || a.Free.GPUs[0].Milli != 0 {
		t.Fatalf("reserve evicting batch work = %+v; want train evicted and the card full", a)
	}
	if _, ok := s.led.Get("train#0/1"); ok {
		t.Error("the evicted reservation is still on the ledger")
	}
}

func TestFrameRoundTripAndLimits(t *testing.T) {
	var buf bytes.Buffer
	c := reserveCall("x#0/1", 10, time.Second)
	if err := writeFrame(&buf, c); err != nil {
		t.Fatal(err)
	}
	b, err := readFrame(bufio.NewReader(&buf), maxCallBytes)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCall(b)
	if err != nil || got.Reservation.ID != "x#0/1" {
		t.Fatalf("decodeCall = %+v, %v", got, err)
	}
	huge := bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	if _, err := readFrame(bufio.NewReader(huge), maxCallBytes); !errors.Is(err, ErrBadCall) {
		t.Errorf("readFrame(4 GiB length) = %v; want ErrBadCall", err)
	}
	for _, bad := range []string{
		`{"op":"nuke"}`,
		`{"op":"reserve","lease_ms":1000}`,
		`{"op":"commit","ids":["a"]}`,
		`{"op":"renew","ids":[""],"lease_ms":5}`,
		`{"op":"list","extra":1}`,
		`{"op":"reserve","lease_ms":-1,"reservation":{"id":"a","deployment":"d","slot":{"node":""}}}`,
		`{"op":"reserve","lease_ms":100,"reservation":{"id":"a","deployment":"d","slot":{"node":"","gpus":[{"index":0,"uuid":"g","milli":2000}]}}}`,
		`{"op":"release","ids":["a"],"evict":["b"]}`,
		`{"op":"reserve","lease_ms":100,"evict":[""],"reservation":{"id":"a","deployment":"d","slot":{"node":""}}}`,
	} {
		if _, err := decodeCall([]byte(bad)); !errors.Is(err, ErrBadCall) {
			t.Errorf("decodeCall(%s) = %v; want ErrBadCall", bad, err)
		}
	}
}

// FuzzDecodeCall: no input panics the decoder, and whatever it accepts the
// ledger serves without panicking.
func FuzzDecodeCall(f *testing.F) {
	for _, c := range []coordinator.Call{
		reserveCall("a#0/1", 500, time.Second),
		{Op: coordinator.OpCommit, IDs: []string{"a#0/1"}, LeaseMillis: 1000},
		{Op: coordinator.OpList},
		{Op: coordinator.OpRelease, IDs: []string{"a"}},
		{Op: coordinator.OpReserve, LeaseMillis: 1000, Evict: []string{"a#0/1"}, Reservation: &coordinator.Reservation{
			ID: "b#0/1", Deployment: "e", Priority: 10, Class: "inference",
			Slot: scheduler.Slot{GPUs: []scheduler.GPUShare{{UUID: "GPU-a", Milli: 800}}},
		}},
	} {
		var buf bytes.Buffer
		_ = writeFrame(&buf, c)
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0x05, '{', '}', 'x', 'y', 'z'})
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := readFrame(bufio.NewReader(bytes.NewReader(b)), maxCallBytes)
		if err != nil {
			return
		}
		c, err := decodeCall(body)
		if err != nil {
			return
		}
		s := &ledgerServer{
			led:  ledger.New(ledger.Capacity{GPUs: []ledger.GPU{{UUID: "GPU-a", VRAMBytes: 1 << 30}}, CPUMilli: 1000}),
			path: t.TempDir() + "/ledger.json", now: func() time.Time { return now },
			log: slog.New(slog.NewTextHandler(io.Discard, nil)), changed: make(chan struct{}, 1),
		}
		a := s.serve(c)
		for _, g := range s.led.Free().GPUs {
			if g.Milli < 0 || g.VRAMBytes < 0 {
				t.Fatalf("call %+v oversold: %+v (answer %+v)", c, s.led.Free(), a)
			}
		}
	})
}
