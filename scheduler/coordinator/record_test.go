package coordinator

import (
	"errors"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/scheduler"
)

func TestStoreLastWriterWinsPerHalf(t *testing.T) {
	a, b := NewStore("A"), NewStore("B")
	now := time.Unix(1000, 0)
	r1 := a.Put("web", Spec{Name: "web", Request: scheduler.Request{Replicas: 1}, Updated: now})
	if ch, err := b.Merge(r1); !ch || err != nil {
		t.Fatalf("B.Merge(new) = %v, %v; want true, nil", ch, err)
	}
	// B coordinates: writes a status; A changes the spec at the same time.
	st, wrote := b.SetStatus("web", Status{State: StatePlaced, Coordinator: "B"})
	if !wrote {
		t.Fatal("SetStatus wrote nothing")
	}
	r2 := a.Put("web", Spec{Name: "web", Request: scheduler.Request{Replicas: 3}, Updated: now})
	for _, s := range []*Store{a, b} {
		s.Merge(st)
		s.Merge(r2)
	}
	ga, _ := a.Get("web")
	gb, _ := b.Get("web")
	if ga.Spec.Request.Replicas != 3 || gb.Spec.Request.Replicas != 3 || ga.Status.State != StatePlaced || gb.Status.State != StatePlaced {
		t.Fatalf("after merging both ways: A %+v, B %+v; want replicas 3 and status placed on both", ga, gb)
	}
	// A stale write loses.
	old := r1
	if ch, _ := a.Merge(old); ch {
		t.Error("merging an older spec changed the store")
	}
	// Equal counters: the higher writer wins, on both sides.
	x := Record{ID: "tie", Spec: Spec{Name: "x"}, SpecVersion: Version{Counter: 9, Writer: "A"}}
	y := Record{ID: "tie", Spec: Spec{Name: "y"}, SpecVersion: Version{Counter: 9, Writer: "B"}}
	a.Merge(x)
	a.Merge(y)
	b.Merge(y)
	b.Merge(x)
	ra, _ := a.Get("tie")
	rb, _ := b.Get("tie")
	if ra.Spec.Name != "y" || rb.Spec.Name != "y" {
		t.Errorf("tie: A has %q, B has %q; want y on both", ra.Spec.Name, rb.Spec.Name)
	}
	// The Lamport clock moved past what was seen.
	if r := a.Put("z", Spec{Name: "z"}); r.SpecVersion.Counter <= 9 {
		t.Errorf("write after seeing counter 9 got %v; want above 9", r.SpecVersion)
	}
}

func TestStoreDeleteAndValidate(t *testing.T) {
	s := NewStore("A")
	if _, err := s.Delete("nope", time.Now()); !errors.Is(err, ErrUnknownDeployment) {
		t.Errorf("Delete(unknown) = %v; want ErrUnknownDeployment", err)
	}
	s.Put("d", Spec{Name: "d"})
	r, err := s.Delete("d", time.Unix(5, 0))
	if err != nil || !r.Spec.Deleted || r.Spec.Desired() != 0 {
		t.Fatalf("Delete = %+v, %v; want a tombstone", r, err)
	}
	for _, bad := range []Record{
		{},
		{ID: "x"},
		{ID: "x", SpecVersion: Version{Counter: 1}, Spec: Spec{Request: scheduler.Request{Replicas: -1}}},
	} {
		if _, err := s.Merge(bad); !errors.Is(err, ErrBadRecord) {
			t.Errorf("Merge(%+v) = %v; want ErrBadRecord", bad, err)
		}
	}
}
