// Package coordinatortest is an in-memory pool for coordinator tests: nodes
// that admit reservations against real ledgers (node/ledger), a transport
// that can cut links and kill nodes, views that can lag, and a clock that
// only moves when the test says so.
package coordinatortest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// ErrUnreachable is what the transport returns across a cut or to a dead
// node.
var ErrUnreachable = errors.New("coordinatortest: unreachable")

// Cluster is the pool. Its methods are safe for concurrent use.
type Cluster struct {
	mu    sync.Mutex
	now   time.Time
	order []string
	nodes map[string]*node
	cut   map[[2]string]bool
	// Stale, when true, makes views show the free capacity of the last
	// Announce instead of the ledgers' current one.
	stale bool
	calls int
	byOp  map[coordinator.Op]int
}

type node struct {
	static    scheduler.Node
	led       *ledger.Ledger
	dead      bool
	announced coordinator.Free
}

// New builds a cluster of nodes (their free values are ignored: every node
// starts empty) at time start.
func New(nodes []scheduler.Node, start time.Time) *Cluster {
	c := &Cluster{now: start, nodes: map[string]*node{}, cut: map[[2]string]bool{}, byOp: map[coordinator.Op]int{}}
	for _, n := range nodes {
		capa := ledger.Capacity{CPUMilli: n.CPUCapacity, MemoryBytes: int64(n.MemoryCapacity), DiskBytes: int64(n.DiskBytes)}
		if capa.CPUMilli == 0 {
			capa.CPUMilli = n.CPUMilli
		}
		if capa.MemoryBytes == 0 {
			capa.MemoryBytes = int64(n.MemoryBytes)
		}
		for _, g := range n.GPUs {
			capa.GPUs = append(capa.GPUs, ledger.GPU{UUID: g.UUID, VRAMBytes: int64(g.VRAM)})
		}
		nn := &node{static: n, led: ledger.New(capa)}
		nn.announced = freeOf(nn.led)
		c.nodes[n.ID] = nn
		c.order = append(c.order, n.ID)
	}
	return c
}

// SetStale switches lagging views on or off.
func (c *Cluster) SetStale(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stale = on
}

// Announce publishes every node's current free capacity to the views.
func (c *Cluster) Announce() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		n.announced = freeOf(n.led)
	}
}

// Now is the cluster's clock.
func (c *Cluster) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d and expires leases on every live node.
func (c *Cluster) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, n := range c.nodes {
		if !n.dead {
			n.led.Expire(c.now)
		}
	}
}

// Kill stops node id: it answers nothing and leaves every view.
func (c *Cluster) Kill(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[id].dead = true
}

// Cut separates the groups a and b both ways (a partition).
func (c *Cluster) Cut(a, b []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			c.cut[[2]string{x, y}], c.cut[[2]string{y, x}] = true, true
		}
	}
}

// Heal removes every cut.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = map[[2]string]bool{}
}

// Calls counts the calls that reached a node.
func (c *Cluster) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// CallsOf counts the calls of one operation that reached a node.
func (c *Cluster) CallsOf(op coordinator.Op) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byOp[op]
}

// Ledger lists node id's reservations.
func (c *Cluster) Ledger(id string) []ledger.Reservation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id].led.List()
}

// Oversold returns an error naming the first card, CPU or memory promised
// beyond its capacity on any node.
func (c *Cluster) Oversold() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range c.order {
		f := c.nodes[id].led.Free()
		for _, g := range f.GPUs {
			if g.Milli < 0 || g.VRAMBytes < 0 {
				return fmt.Errorf("node %s: GPU %s oversold: free %d milli, %d bytes", id, g.UUID, g.Milli, g.VRAMBytes)
			}
		}
		if f.CPUMilli < 0 || f.MemoryBytes < 0 {
			return fmt.Errorf("node %s: host oversold: %+v", id, f)
		}
	}
	return nil
}

// Transport is the network as member from reaches it.
func (c *Cluster) Transport(from string) coordinator.Transport { return transport{c, from} }

// View is the pool as member from sees it: the live nodes it can reach.
func (c *Cluster) View(from string) coordinator.View { return view{c, from} }

type transport struct {
	c    *Cluster
	from string
}

func (t transport) Call(ctx context.Context, to string, call coordinator.Call) (coordinator.Answer, error) {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[to]
	if !ok || n.dead || c.cut[[2]string{t.from, to}] || c.nodes[t.from].dead {
		return coordinator.Answer{}, fmt.Errorf("%w: %s to %s", ErrUnreachable, t.from, to)
	}
	c.calls++
	c.byOp[call.Op]++
	a := Serve(n.led, c.now, call)
	if !c.stale {
		n.announced = freeOf(n.led)
	}
	return a, nil
}

type view struct {
	c    *Cluster
	from string
}

func (v view) Nodes() []scheduler.Node {
	c := v.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []scheduler.Node
	for _, id := range c.order {
		n := c.nodes[id]
		if n.dead || c.cut[[2]string{v.from, id}] {
			continue
		}
		s := n.static
		s.GPUs = append([]scheduler.GPU(nil), s.GPUs...)
		f := n.announced
		if !c.stale {
			f = freeOf(n.led)
		}
		for i, g := range s.GPUs {
			s.GPUs[i].FreeMilli, s.GPUs[i].FreeVRAM = scheduler.MilliPerGPU, g.VRAM
			for _, x := range f.GPUs {
				if x.UUID == g.UUID {
					s.GPUs[i].FreeMilli, s.GPUs[i].FreeVRAM = int(max(0, x.Milli)), uint64(max(0, x.VRAMBytes))
				}
			}
		}
		s.CPUMilli, s.MemoryBytes = max(0, f.CPUMilli), uint64(max(0, f.MemoryBytes))
		s.CPUCapacity, s.MemoryCapacity = n.led.Capacity().CPUMilli, uint64(n.led.Capacity().MemoryBytes)
		out = append(out, s)
	}
	return out
}

func freeOf(l *ledger.Ledger) coordinator.Free {
	f := l.Free()
	out := coordinator.Free{CPUMilli: f.CPUMilli, MemoryBytes: f.MemoryBytes, DiskBytes: f.DiskBytes}
	for _, g := range f.GPUs {
		out.GPUs = append(out.GPUs, coordinator.GPUFree{UUID: g.UUID, Milli: g.Milli, VRAMBytes: g.VRAMBytes})
	}
	return out
}

// Serve answers call against l at now, the way a node does.
func Serve(l *ledger.Ledger, now time.Time, call coordinator.Call) coordinator.Answer {
	lease := time.Duration(call.LeaseMillis) * time.Millisecond
	var a coordinator.Answer
	switch call.Op {
	case coordinator.OpReserve:
		r := call.Reservation
		claim := ledger.Claim{CPUMilli: r.Slot.CPUMilli, MemoryBytes: int64(r.Slot.MemoryBytes), DiskBytes: int64(r.Slot.DiskBytes)}
		for _, g := range r.Slot.GPUs {
			claim.GPUs = append(claim.GPUs, ledger.GPUClaim{UUID: g.UUID, Milli: int64(g.Milli), VRAMBytes: int64(g.VRAM)})
		}
		lr := ledger.Reservation{ID: r.ID, Deployment: r.Deployment, Holder: r.Holder, Priority: ledger.Priority(r.Priority),
			Preemptible: r.Class == scheduler.Batch.String(), Claim: claim}
		gone, err := l.ReserveEvicting(now, lr, lease, call.Evict)
		for _, g := range gone {
			a.Evicted = append(a.Evicted, g.ID)
		}
		var ie *ledger.InsufficientError
		switch {
		case errors.As(err, &ie):
			a.Refused = &coordinator.Refused{Resource: string(ie.Resource), GPU: ie.GPU, Want: ie.Want, Free: ie.Free}
		case err != nil:
			a.Error = err.Error()
		}
	case coordinator.OpCommit, coordinator.OpRenew:
		for _, id := range call.IDs {
			var err error
			if call.Op == coordinator.OpCommit {
				err = l.Commit(now, id, lease)
			} else {
				err = l.Renew(now, id, lease)
			}
			if err != nil {
				a.Unknown = append(a.Unknown, id)
			}
		}
	case coordinator.OpRelease:
		for _, id := range call.IDs {
			l.Release(id)
		}
	case coordinator.OpList:
		for _, r := range l.List() {
			if call.Deployment != "" && r.Deployment != call.Deployment {
				continue
			}
			slot := scheduler.Slot{CPUMilli: r.Claim.CPUMilli, MemoryBytes: uint64(r.Claim.MemoryBytes), DiskBytes: uint64(r.Claim.DiskBytes)}
			for _, g := range r.Claim.GPUs {
				slot.GPUs = append(slot.GPUs, scheduler.GPUShare{UUID: g.UUID, Milli: int(g.Milli), VRAM: uint64(g.VRAMBytes)})
			}
			a.Reservations = append(a.Reservations, coordinator.Reservation{
				ID: r.ID, Deployment: r.Deployment, Holder: r.Holder, Priority: int(r.Priority),
				Class: classOf(r), Slot: slot, State: string(r.State), Expires: r.Expires, Since: r.Since,
			})
		}
		sort.Slice(a.Reservations, func(i, j int) bool { return a.Reservations[i].ID < a.Reservations[j].ID })
	default:
		a.Error = fmt.Sprintf("unknown op %q", call.Op)
	}
	f := freeOf(l)
	a.Free = &f
	return a
}

// classOf is the class a listed reservation reports.
func classOf(r ledger.Reservation) string {
	if r.Preemptible {
		return scheduler.Batch.String()
	}
	return scheduler.Inference.String()
}
