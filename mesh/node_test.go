package mesh_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

func TestPoolFormsAndEveryoneSeesEveryone(t *testing.T) {
	nodes := meshtest.Pool(t, 5, meshtest.Fast)
	for i, n := range nodes {
		if !meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) }) {
			t.Fatalf("node %d sees %v; want all 5 alive with records", i, n.Members())
		}
	}
	for _, m := range nodes[3].Members() {
		if len(m.Record.Inventory.GPUs) != 1 || m.Record.Inventory.GPUs[0].Source != "declared" {
			t.Errorf("member %s GPUs %+v; want one declared GPU", m.PeerID, m.Record.Inventory.GPUs)
		}
	}
}

func TestRecordLookupFromAnyMember(t *testing.T) {
	nodes := meshtest.Pool(t, 4, meshtest.Fast)
	for _, n := range nodes {
		meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) })
	}
	for i, from := range nodes {
		for j, of := range nodes {
			var r *mesh.Record
			var err error
			meshtest.Eventually(5*time.Second, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				r, err = from.LookupRecord(ctx, of.ID())
				return err == nil
			})
			if err != nil {
				t.Fatalf("node %d LookupRecord(node %d) = %v", i, j, err)
			}
			if r.PeerID != of.ID().String() || r.Inventory.GPUs[0].Name != "GPU-"+r.Name {
				t.Errorf("node %d LookupRecord(node %d) = %+v; want node %d's record", i, j, r, j)
			}
		}
	}
}

func TestOutsiderSeesNothingAndIsSeenByNobody(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	other, _ := mesh.NewPool()
	tok, _ := mesh.ParseToken(nodes[0].Token())
	other.Bootstrap = tok.Bootstrap // right addresses, wrong secret
	out := meshtest.Start(t, meshtest.Config(t, other, "outsider"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := out.Join(ctx)
	if !errors.Is(err, mesh.ErrAdmissionRefused) {
		t.Fatalf("outsider Join = %v; want ErrAdmissionRefused", err)
	}
	time.Sleep(500 * time.Millisecond) // several heartbeats: nothing may leak either way
	if got := out.Members(); len(got) != 1 {
		t.Errorf("outsider sees %d members; want only itself", len(got))
	}
	for i, n := range nodes {
		for _, m := range n.Members() {
			if m.PeerID == out.ID() {
				t.Errorf("node %d lists the outsider", i)
			}
		}
		if _, err := out.LookupRecord(ctx, n.ID()); err == nil {
			t.Errorf("outsider fetched node %d's record", i)
		}
	}
}

func TestKilledMemberIsMarkedDead(t *testing.T) {
	nodes := meshtest.Pool(t, 4, meshtest.Fast)
	for _, n := range nodes {
		meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) })
	}
	victim := nodes[3]
	_ = victim.Close() // no goodbye
	for i, n := range nodes[:3] {
		if !meshtest.Eventually(5*time.Second, func() bool { return meshtest.Sees(n, []*mesh.Node{victim}, mesh.StateDead) }) {
			t.Errorf("node %d never marked the killed member dead", i)
		}
	}
}

func TestLeaveIsSeenAsLeft(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	for _, n := range nodes {
		meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[2].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[:2] {
		// Left, not dead: the goodbye arrived before the failure detector fired.
		if !meshtest.Eventually(900*time.Millisecond, func() bool { return meshtest.Sees(n, nodes[2:], mesh.StateLeft) }) {
			t.Errorf("node %d does not list the leaver as left: %v", i, n.Members())
		}
	}
}

func TestCopiedIdentityIsRefused(t *testing.T) {
	nodes := meshtest.Pool(t, 3, meshtest.Fast)
	for _, n := range nodes {
		meshtest.Eventually(10*time.Second, func() bool { return meshtest.Sees(n, nodes, mesh.StateAlive) })
	}
	tok, _ := mesh.ParseToken(nodes[0].Token())
	// Node 2's key, as if its home dir had been copied to another machine.
	c := meshtest.Config(t, tok, "copy")
	c.Key = keyOf(t, nodes, 2)
	c.Pool.Bootstrap = tok.Bootstrap[:1]
	cp := meshtest.Start(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Join(ctx); !errors.Is(err, mesh.ErrDuplicateIdentity) {
		t.Fatalf("copy Join = %v; want ErrDuplicateIdentity", err)
	}
	// The original stays a member: refusing the copy bans nothing.
	time.Sleep(1500 * time.Millisecond) // longer than DeadAfter in the Fast profile
	for i, n := range nodes {
		if !meshtest.Sees(n, nodes, mesh.StateAlive) {
			t.Errorf("node %d: the original lost its membership: %v", i, n.Members())
		}
	}
}

func TestJoinErrors(t *testing.T) {
	p, _ := mesh.NewPool()
	n := meshtest.Start(t, meshtest.Config(t, p, "alone"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Join(ctx); !errors.Is(err, mesh.ErrNoBootstrap) {
		t.Errorf("Join with no peers = %v; want ErrNoBootstrap", err)
	}
	// A token whose peer listens nowhere.
	tok, _ := mesh.ParseToken(n.Token())
	_ = n.Close()
	m := meshtest.Start(t, meshtest.Config(t, tok, "late"))
	if err := m.Join(ctx); !errors.Is(err, mesh.ErrNoBootstrap) {
		t.Errorf("Join to a closed peer = %v; want ErrNoBootstrap", err)
	}
}

func TestListenAddressInUse(t *testing.T) {
	p, _ := mesh.NewPool()
	a := meshtest.Start(t, meshtest.Config(t, p, "a"))
	c := meshtest.Config(t, p, "b")
	c.ListenAddrs = a.Host().Network().ListenAddresses()
	if _, err := mesh.New(context.Background(), c); !errors.Is(err, mesh.ErrListen) {
		t.Errorf("New on taken ports = %v; want ErrListen", err)
	}
}

func keyOf(t *testing.T, nodes []*mesh.Node, i int) crypto.PrivKey {
	t.Helper()
	return nodes[i].KeyOf()
}
