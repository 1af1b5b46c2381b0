package ledger

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

const gib = int64(1) << 30

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func twoCards() Capacity {
	return Capacity{
		GPUs:        []GPU{{UUID: "a", VRAMBytes: 24 * gib}, {UUID: "b", VRAMBytes: 8 * gib}},
		CPUMilli:    8000,
		MemoryBytes: 32 * gib,
		DiskBytes:   100 * gib,
	}
}

func gpu(uuid string, milli, vramGiB int64) GPUClaim {
	return GPUClaim{UUID: uuid, Milli: milli, VRAMBytes: vramGiB * gib}
}

func TestReserveRefusesWhatDoesNotFit(t *testing.T) {
	tests := []struct {
		name     string
		before   []Claim
		claim    Claim
		resource Resource // "" means it fits
		bad      bool
	}{
		{name: "whole card", claim: Claim{GPUs: []GPUClaim{gpu("a", 1000, 24)}}},
		{name: "two halves", before: []Claim{{GPUs: []GPUClaim{gpu("a", 500, 10)}}}, claim: Claim{GPUs: []GPUClaim{gpu("a", 500, 10)}}},
		{name: "share over", before: []Claim{{GPUs: []GPUClaim{gpu("a", 600, 1)}}}, claim: Claim{GPUs: []GPUClaim{gpu("a", 500, 1)}}, resource: ResourceGPU},
		{name: "vram over", before: []Claim{{GPUs: []GPUClaim{gpu("b", 100, 6)}}}, claim: Claim{GPUs: []GPUClaim{gpu("b", 100, 4)}}, resource: ResourceVRAM},
		{name: "cpu over", claim: Claim{CPUMilli: 8001}, resource: ResourceCPU},
		{name: "memory over", claim: Claim{MemoryBytes: 33 * gib}, resource: ResourceMemory},
		{name: "disk over", before: []Claim{{DiskBytes: 90 * gib}}, claim: Claim{DiskBytes: 11 * gib}, resource: ResourceDisk},
		{name: "unknown gpu", claim: Claim{GPUs: []GPUClaim{gpu("z", 1000, 1)}}, bad: true},
		{name: "gpu twice", claim: Claim{GPUs: []GPUClaim{gpu("a", 100, 1), gpu("a", 100, 1)}}, bad: true},
		{name: "zero share", claim: Claim{GPUs: []GPUClaim{gpu("a", 0, 1)}}, bad: true},
		{name: "share above one card", claim: Claim{GPUs: []GPUClaim{gpu("a", 1001, 1)}}, bad: true},
		{name: "negative cpu", claim: Claim{CPUMilli: -1}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(twoCards())
			for i, c := range tt.before {
				if err := l.Reserve(t0, Reservation{ID: fmt.Sprint("before", i), Claim: c}, time.Minute); err != nil {
					t.Fatalf("setup Reserve(%v) = %v", c, err)
				}
			}
			err := l.Reserve(t0, Reservation{ID: "new", Claim: tt.claim}, time.Minute)
			var ie *InsufficientError
			switch {
			case tt.bad:
				if !errors.Is(err, ErrBadClaim) {
					t.Errorf("Reserve(%v) = %v; want ErrBadClaim", tt.claim, err)
				}
			case tt.resource == "":
				if err != nil {
					t.Errorf("Reserve(%v) = %v; want it to fit", tt.claim, err)
				}
			case !errors.As(err, &ie) || !errors.Is(err, ErrInsufficient) || ie.Resource != tt.resource:
				t.Errorf("Reserve(%v) = %v; want insufficient %s", tt.claim, err, tt.resource)
			}
			if err != nil {
				if _, ok := l.Get("new"); ok {
					t.Errorf("refused reservation is held")
				}
			}
		})
	}
}

func TestLeaseLifecycle(t *testing.T) {
	l := New(twoCards())
	r := Reservation{ID: "r1", Deployment: "d", Holder: "coord", Claim: Claim{GPUs: []GPUClaim{gpu("a", 1000, 20)}}}
	if err := l.Reserve(t0, r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// A coordinator's retry of the same claim renews; another claim under
	// the same ID is a conflict.
	if err := l.Reserve(t0.Add(5*time.Second), r, 10*time.Second); err != nil {
		t.Errorf("retry Reserve = %v; want nil", err)
	}
	if got, _ := l.Get("r1"); !got.Expires.Equal(t0.Add(15*time.Second)) || got.State != StateHeld {
		t.Errorf("after retry: %+v; want held until t0+15s", got)
	}
	other := r
	other.Claim = Claim{GPUs: []GPUClaim{gpu("b", 1000, 1)}}
	if err := l.Reserve(t0, other, time.Minute); !errors.Is(err, ErrConflict) {
		t.Errorf("Reserve with reused ID = %v; want ErrConflict", err)
	}
	if exp := l.Expire(t0.Add(14 * time.Second)); len(exp) != 0 {
		t.Errorf("Expire before the lease ends = %v; want none", exp)
	}
	if err := l.Commit(t0.Add(14*time.Second), "r1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if exp := l.Expire(t0.Add(70 * time.Second)); len(exp) != 0 {
		t.Errorf("Expire of a committed lease within its minute = %v; want none", exp)
	}
	if err := l.Renew(t0.Add(70*time.Second), "r1", time.Minute); err != nil {
		t.Fatal(err)
	}
	exp := l.Expire(t0.Add(131 * time.Second))
	if len(exp) != 1 || exp[0].ID != "r1" || exp[0].State != StateCommitted {
		t.Fatalf("Expire after the lease = %+v; want r1 committed", exp)
	}
	if f := l.Free(); f.GPUs[0].Milli != MilliPerGPU || f.GPUs[0].VRAMBytes != 24*gib {
		t.Errorf("free after expiry = %+v; want card a whole", f.GPUs[0])
	}
	for _, err := range []error{l.Commit(t0, "r1", time.Minute), l.Renew(t0, "r1", time.Minute)} {
		if !errors.Is(err, ErrUnknown) {
			t.Errorf("on an expired reservation: %v; want ErrUnknown", err)
		}
	}
	if l.Release("r1") {
		t.Errorf("Release of an expired reservation = true")
	}
}

func TestVictimsPreferCheapBatchWork(t *testing.T) {
	l := New(twoCards())
	add := func(id string, p Priority, since time.Duration, c Claim) {
		t.Helper()
		if err := l.Reserve(t0.Add(since), Reservation{ID: id, Priority: p, Claim: c}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	add("old-batch", PriorityBatch, 0, Claim{GPUs: []GPUClaim{gpu("a", 500, 10)}})
	add("young-batch", PriorityBatch, 50*time.Minute, Claim{GPUs: []GPUClaim{gpu("a", 500, 10)}})
	add("serving", PriorityInference, 0, Claim{GPUs: []GPUClaim{gpu("b", 1000, 8)}})
	now := t0.Add(55 * time.Minute)

	half := Claim{GPUs: []GPUClaim{gpu("a", 500, 4)}}
	v, err := l.Victims(now, half, PriorityInference)
	if err != nil || len(v) != 1 || v[0].ID != "young-batch" {
		t.Errorf("Victims(half of a) = %v, %v; want young-batch only", v, err)
	}
	whole := Claim{GPUs: []GPUClaim{gpu("a", 1000, 24)}}
	if v, err := l.Victims(now, whole, PriorityInference); err != nil || len(v) != 2 {
		t.Errorf("Victims(all of a) = %v, %v; want both batch jobs", v, err)
	}
	// Batch never evicts batch, and nobody evicts inference work.
	if v, err := l.Victims(now, half, PriorityBatch); !errors.Is(err, ErrInsufficient) || v != nil {
		t.Errorf("Victims(batch claim) = %v, %v; want ErrInsufficient", v, err)
	}
	if v, err := l.Victims(now, Claim{GPUs: []GPUClaim{gpu("b", 100, 1)}}, PriorityInference); !errors.Is(err, ErrInsufficient) || v != nil {
		t.Errorf("Victims(on the serving card) = %v, %v; want ErrInsufficient", v, err)
	}
	if v, err := l.Victims(now, Claim{CPUMilli: 100}, PriorityInference); err != nil || v != nil {
		t.Errorf("Victims(a claim that fits) = %v, %v; want none", v, err)
	}
}

// ReserveEvicting evicts only named batch work of lower priority, all or
// nothing, and only when the claim then fits.
func TestReserveEvicting(t *testing.T) {
	l := New(twoCards())
	for _, r := range []Reservation{
		{ID: "batch-a", Priority: PriorityBatch, Preemptible: true, Claim: Claim{GPUs: []GPUClaim{gpu("a", 600, 10)}}},
		{ID: "batch-b", Priority: PriorityBatch, Preemptible: true, Claim: Claim{GPUs: []GPUClaim{gpu("b", 1000, 8)}}},
		{ID: "serving", Priority: PriorityInference, Claim: Claim{GPUs: []GPUClaim{gpu("a", 400, 4)}}},
	} {
		if err := l.Reserve(t0, r, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	claim := Claim{GPUs: []GPUClaim{gpu("a", 600, 8)}}
	infer := Reservation{ID: "new", Priority: PriorityInference, Claim: claim}
	tests := []struct {
		name    string
		r       Reservation
		victims []string
		want    error // nil: admitted
	}{
		{"no victims", infer, nil, ErrInsufficient},
		{"the wrong victim", infer, []string{"batch-b"}, ErrInsufficient},
		{"inference is no victim", infer, []string{"serving", "batch-a"}, ErrNotEvictable},
		{"batch evicts no batch", Reservation{ID: "new", Priority: PriorityBatch, Claim: claim}, []string{"batch-a"}, ErrNotEvictable},
	}
	for _, tt := range tests {
		gone, err := l.ReserveEvicting(t0, tt.r, time.Minute, tt.victims)
		if !errors.Is(err, tt.want) || gone != nil || len(l.List()) != 3 {
			t.Errorf("%s: ReserveEvicting = %v, %v with %d reservations left; want %v and nothing changed", tt.name, gone, err, len(l.List()), tt.want)
		}
	}
	gone, err := l.ReserveEvicting(t0, infer, time.Minute, []string{"batch-a", "gone-already"})
	if err != nil || len(gone) != 1 || gone[0].ID != "batch-a" {
		t.Fatalf("ReserveEvicting(batch-a) = %v, %v; want batch-a evicted", gone, err)
	}
	if _, ok := l.Get("new"); !ok {
		t.Error("the evicting reservation is not held")
	}
	if f := l.Free(); f.GPUs[0].Milli != 0 {
		t.Errorf("card a free %d milli; want 0", f.GPUs[0].Milli)
	}
}

// TestNeverOversold drives random reservations, commits, renewals, releases,
// expiries and evictions, and checks after every step that no resource is
// promised beyond the capacity.
func TestNeverOversold(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		c := Capacity{CPUMilli: 16000, MemoryBytes: 64 * gib, DiskBytes: 500 * gib}
		for i := range 1 + rng.IntN(4) {
			c.GPUs = append(c.GPUs, GPU{UUID: fmt.Sprint("gpu", i), VRAMBytes: (8 + rng.Int64N(72)) * gib})
		}
		l := New(c)
		now := t0
		randomClaim := func() Claim {
			var cl Claim
			perm := rng.Perm(len(c.GPUs))
			for _, i := range perm[:rng.IntN(len(c.GPUs)+1)] {
				cl.GPUs = append(cl.GPUs, GPUClaim{UUID: c.GPUs[i].UUID, Milli: 1 + rng.Int64N(1000), VRAMBytes: rng.Int64N(c.GPUs[i].VRAMBytes)})
			}
			cl.CPUMilli, cl.MemoryBytes, cl.DiskBytes = rng.Int64N(6000), rng.Int64N(24*gib), rng.Int64N(200*gib)
			return cl
		}
		for step := range 300 {
			now = now.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
			ids := l.List()
			switch op := rng.IntN(10); {
			case op < 5:
				p := Priority(rng.IntN(2)) * PriorityInference
				_ = l.Reserve(now, Reservation{ID: fmt.Sprint("r", step), Priority: p, Preemptible: p == PriorityBatch, Claim: randomClaim()}, time.Duration(1+rng.IntN(30))*time.Second)
			case op == 5 && len(ids) > 0:
				_ = l.Commit(now, ids[rng.IntN(len(ids))].ID, time.Minute)
			case op == 6 && len(ids) > 0:
				_ = l.Renew(now, ids[rng.IntN(len(ids))].ID, 10*time.Second)
			case op == 7 && len(ids) > 0:
				l.Release(ids[rng.IntN(len(ids))].ID)
			case op == 8:
				l.Expire(now)
			default:
				cl := randomClaim()
				v, err := l.Victims(now, cl, PriorityInference)
				if err != nil {
					continue
				}
				for _, r := range v {
					if r.Priority >= PriorityInference {
						t.Fatalf("seed %d: victim %s has priority %d", seed, r.ID, r.Priority)
					}
					l.Release(r.ID)
				}
				// Evict through ReserveEvicting, naming the victims plus a
				// random other reservation (which it must refuse to touch
				// unless it is evictable batch work).
				names := make([]string, 0, len(v)+1)
				for _, r := range v {
					names = append(names, r.ID)
				}
				extra := Reservation{}
				if len(ids) > 0 && rng.IntN(3) == 0 {
					extra = ids[rng.IntN(len(ids))]
					names = append(names, extra.ID)
				}
				before := len(l.List())
				gone, err := l.ReserveEvicting(now, Reservation{ID: fmt.Sprint("p", step), Priority: PriorityInference, Claim: cl}, time.Minute, names)
				switch {
				case extra.ID != "" && (!extra.Preemptible || extra.Priority >= PriorityInference):
					if !errors.Is(err, ErrNotEvictable) || len(l.List()) != before {
						t.Fatalf("seed %d: evicting %s (priority %d) = %v; want ErrNotEvictable and no change", seed, extra.ID, extra.Priority, err)
					}
				case err != nil:
					t.Fatalf("seed %d: after choosing %d victims, ReserveEvicting = %v", seed, len(v), err)
				default:
					for _, r := range gone {
						if r.Priority >= PriorityInference || !r.Preemptible {
							t.Fatalf("seed %d: evicted %s of priority %d", seed, r.ID, r.Priority)
						}
					}
				}
			}
			f := l.Free()
			for _, g := range f.GPUs {
				if g.Milli < 0 || g.VRAMBytes < 0 {
					t.Fatalf("seed %d step %d: GPU %s oversold: %+v", seed, step, g.UUID, g)
				}
			}
			if f.CPUMilli < 0 || f.MemoryBytes < 0 || f.DiskBytes < 0 {
				t.Fatalf("seed %d step %d: oversold: %+v", seed, step, f)
			}
		}
	}
}

func TestRestoreKeepsStateAndRefusesOverflow(t *testing.T) {
	l := New(twoCards())
	if err := l.Reserve(t0, Reservation{ID: "x", Claim: Claim{GPUs: []GPUClaim{gpu("a", 1000, 24)}}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(t0, "x", time.Hour); err != nil {
		t.Fatal(err)
	}
	saved := l.List()
	again := New(twoCards())
	for _, r := range saved {
		if err := again.Restore(r); err != nil {
			t.Fatalf("Restore(%s) = %v", r.ID, err)
		}
	}
	if got, _ := again.Get("x"); got.State != StateCommitted || !got.Expires.Equal(t0.Add(time.Hour)) {
		t.Errorf("restored %+v; want committed until t0+1h", got)
	}
	smaller := New(Capacity{GPUs: []GPU{{UUID: "a", VRAMBytes: 16 * gib}}})
	if err := smaller.Restore(saved[0]); !errors.Is(err, ErrInsufficient) {
		t.Errorf("Restore onto a smaller card = %v; want ErrInsufficient", err)
	}
}
