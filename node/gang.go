package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoalmesh/shoal/node/ledger"
	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/runtime/template"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// GangProtocol carries one TCP connection between members of a gang that
// run on different nodes: the opener writes one line "DEPLOYMENT REPLICA\n"
// naming the member it wants, the node that runs it connects to the
// member's loopback port, and the stream then carries the connection's
// bytes both ways.
//
// Why a stream rather than the member's address: nodes sit behind home
// routers and on loopback test pools; the mesh already reaches every
// member (hole punching, relays), only admitted members may open the
// protocol, and a member is handed 127.0.0.1 addresses that work wherever
// it runs. Bulk traffic (tensor-parallel activations) pays the stream's
// cost; see ARCHITECTURE.md for the numbers of a libp2p stream over TCP.
const GangProtocol = protocol.ID("/shoal/gang/1.0.0")

// Environment variables every gang member gets.
const (
	EnvGangRank  = "SHOAL_GANG_RANK"  // this member's rank, 0 to size-1
	EnvGangSize  = "SHOAL_GANG_SIZE"  // how many members the gang has
	EnvGangRole  = "SHOAL_GANG_ROLE"  // this member's role in the template
	EnvGangPeers = "SHOAL_GANG_PEERS" // host:port of every member in rank order (this member's own listen address at its rank)
)

// gangMember is one member's place in its gang, as the deployment's
// status lists the gang once every member is committed.
type gangMember struct {
	Rank    int
	Members []gangPeer // by rank
}

// gangPeer is one member of a gang.
type gangPeer struct {
	Replica string   // the coordinator's replica ID
	Node    string   // the peer that runs it
	GPUs    []string // its GPU UUIDs
}

// gangOf finds res's place in its gang: ok once the record's status lists
// every member (desired many) placed, res's among them. Ranks follow the
// replica IDs' order, which every node sees alike.
func gangOf(rec coordinator.Record, res ledger.Reservation) (gangMember, bool) {
	want := rec.Spec.Desired()
	reps := rec.Status.Replicas
	if want == 0 || len(reps) != want {
		return gangMember{}, false
	}
	me := coordinator.ReplicaID(res.ID)
	var g gangMember
	g.Rank = -1
	ids := make([]string, len(reps))
	for i, r := range reps {
		ids[i] = r.ID
	}
	order := make([]int, len(reps))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
	for _, i := range order {
		r := reps[i]
		if r.State != coordinator.ReplicaPlaced || len(r.Slots) == 0 {
			return gangMember{}, false
		}
		p := gangPeer{Replica: r.ID, Node: r.Slots[0].Node}
		for _, s := range r.Slots {
			for _, gs := range s.GPUs {
				p.GPUs = append(p.GPUs, gs.UUID)
			}
		}
		if r.ID == me {
			g.Rank = len(g.Members)
		}
		g.Members = append(g.Members, p)
	}
	return g, g.Rank >= 0
}

// roleOf is the role of rank: the template's roles take ranks in the
// order written, each as many as its count.
func roleOf(roles []template.Role, rank int) (string, bool) {
	n := 0
	for _, r := range roles {
		if rank < n+r.Count {
			return r.Name, true
		}
		n += r.Count
	}
	return "", false
}

// tensorSplit is each member's share of a split model, as the template's
// ${shoal.gang.tensorSplit} wants it: the free VRAM of the members of
// split (ranks, in that order), as integers proportional to it (MiB).
func tensorSplit(vram []uint64) string {
	parts := make([]string, len(vram))
	for i, v := range vram {
		parts[i] = strconv.FormatUint(max(v>>20, 1), 10)
	}
	return strings.Join(parts, ",")
}

// gangNet connects the members of gangs: a loopback listener on this node
// for each peer of each gang member it runs, forwarded over GangProtocol
// to the peer's node (or straight to the peer's port when it runs here),
// and the handler that lets other nodes reach this node's members.
type gangNet struct {
	self    peer.ID
	streams streams
	members Membership
	// port finds the loopback port of a member this node runs.
	port func(dep, replica string) (int, bool)
	log  *slog.Logger
}

// vram is the free VRAM of gpus on node as its record says (the total
// where the record has no load), 0 when unknown.
func (g *gangNet) vram(node string, gpus []string) uint64 {
	for _, m := range g.members.Members() {
		if m.PeerID.String() != node || m.Record == nil {
			continue
		}
		var sum uint64
		for i, gpu := range m.Record.Inventory.GPUs {
			if !slices.Contains(gpus, gpu.UUID) {
				continue
			}
			v := gpu.VRAMTotalBytes
			switch {
			case i < len(m.Load.VRAMFreeBytes) && m.Load.VRAMFreeBytes[i] > 0:
				v = m.Load.VRAMFreeBytes[i] // heartbeated
			case gpu.VRAMFreeBytes > 0:
				v = gpu.VRAMFreeBytes // measured when the record was made
			}
			sum += v
		}
		return sum
	}
	return 0
}

// handle serves GangProtocol: it connects the stream to the member it
// names, which must be a gang member this node runs.
func (g *gangNet) handle(st network.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(st, 512)
	line, err := br.ReadString('\n')
	if err != nil || len(line) > 500 {
		st.Reset()
		return
	}
	dep, rep, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		st.Reset()
		return
	}
	port, ok := g.port(dep, rep)
	if !ok {
		st.Reset()
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		st.Reset()
		return
	}
	splice(c, bufferedStream{br, st})
}

// bufferedStream reads what the header's reader buffered before the rest
// of the stream.
type bufferedStream struct {
	r *bufio.Reader
	network.Stream
}

func (b bufferedStream) Read(p []byte) (int, error) { return b.r.Read(p) }

// splice copies both ways until both sides are done, then closes both.
func splice(a net.Conn, b interface {
	io.ReadWriteCloser
	CloseWrite() error
}) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(b, a)
		_ = b.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(a, b)
		if tc, ok := a.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	wg.Wait()
	a.Close()
	b.Close()
}

// gangLinks are the loopback listeners of one member's peers. It owns an
// accept goroutine per listener and one per connection; close stops and
// waits for them.
type gangLinks struct {
	g     *gangNet
	dep   string
	lns   []net.Listener
	mu    sync.Mutex
	conns map[io.Closer]struct{}
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelFunc
}

// links opens a loopback listener for each member of gm but rank, and
// returns the gang's addresses in rank order with own at rank.
func (g *gangNet) links(dep string, gm gangMember, own string) (*gangLinks, []string, error) {
	l := &gangLinks{g: g, dep: dep, conns: map[io.Closer]struct{}{}}
	l.ctx, l.stop = context.WithCancel(context.Background())
	addrs := make([]string, len(gm.Members))
	for i, m := range gm.Members {
		if i == gm.Rank {
			addrs[i] = own
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			l.close()
			return nil, nil, fmt.Errorf("node: gang link to rank %d: %w", i, err)
		}
		l.lns = append(l.lns, ln)
		addrs[i] = ln.Addr().String()
		l.wg.Add(1)
		go l.accept(ln, m)
	}
	return l, addrs, nil
}

func (l *gangLinks) accept(ln net.Listener, m gangPeer) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		l.track(c, true)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.track(c, false)
			if err := l.forward(c, m); err != nil {
				l.g.log.Debug("gang link failed", "deployment", l.dep, "to", m.Replica, "err", err)
				c.Close()
			}
		}()
	}
}

func (l *gangLinks) track(c io.Closer, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on {
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
}

// forward connects c to member m: straight to its port when it runs on
// this node, else over a GangProtocol stream to its node.
func (l *gangLinks) forward(c net.Conn, m gangPeer) error {
	if m.Node == l.g.self.String() {
		port, ok := l.g.port(l.dep, m.Replica)
		if !ok {
			return errors.New("node: gang member not running here")
		}
		d, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
		if err != nil {
			return err
		}
		l.track(d, true)
		defer l.track(d, false)
		splice(c, d.(*net.TCPConn))
		return nil
	}
	p, err := peer.Decode(m.Node)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	st, err := l.g.streams.OpenStream(ctx, p, GangProtocol)
	cancel()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(st, l.dep+" "+m.Replica+"\n"); err != nil {
		st.Reset()
		return err
	}
	l.track(st, true)
	defer l.track(st, false)
	splice(c, st)
	return nil
}

// close stops the listeners and every connection, and waits.
func (l *gangLinks) close() {
	if l == nil {
		return
	}
	l.stop()
	for _, ln := range l.lns {
		ln.Close()
	}
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// freePort picks a free loopback port for a member to listen on, so its
// peers can be told before it starts.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// gangMemberOf says whether the replica on res may start and, for a gang,
// its place: a gang member waits until every member is committed.
func (r *replicaRunner) gangMemberOf(rec coordinator.Record, res ledger.Reservation) (*gangMember, bool) {
	if !rec.Spec.Request.Gang {
		return nil, true
	}
	if r.gang == nil {
		return nil, false
	}
	gm, ok := gangOf(rec, res)
	if !ok {
		return nil, false
	}
	return &gm, true
}

// memberSpec is what the backend runs for ru: a service or job replica,
// or a gang member in the role its rank gives, listening on a port picked
// now and handed its peers' addresses (loopback links to each).
func (r *replicaRunner) memberSpec(ts *template.Spec, ru *replicaRun, dep string) (runtime.Spec, error) {
	if ru.gang == nil || ts.Kind != template.Gang || ts.Gang == nil {
		return ts.ReplicaSpec("", ru.id, dep)
	}
	gm := *ru.gang
	role, ok := roleOf(ts.Gang.Roles, gm.Rank)
	if !ok {
		return runtime.Spec{}, fmt.Errorf("gang of %d members has no role for rank %d", len(gm.Members), gm.Rank)
	}
	s, err := ts.ReplicaSpec(role, ru.id, dep)
	if err != nil {
		return runtime.Spec{}, err
	}
	port, err := freePort()
	if err != nil {
		return runtime.Spec{}, err
	}
	own := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	links, addrs, err := r.gang.links(dep, gm, own)
	if err != nil {
		return runtime.Spec{}, err
	}
	r.mu.Lock()
	ru.gangPort, ru.links = port, links
	r.mu.Unlock()
	s.HostPort = port
	if s.Vars == nil {
		s.Vars = map[string]string{}
	}
	if s.Env == nil {
		s.Env = map[string]string{}
	}
	byRole := map[string][]string{}
	vram := make([]uint64, len(gm.Members))
	for i, m := range gm.Members {
		rl, _ := roleOf(ts.Gang.Roles, i)
		byRole[rl] = append(byRole[rl], addrs[i])
		vram[i] = r.gang.vram(m.Node, m.GPUs)
	}
	s.Vars["gang.rank"] = strconv.Itoa(gm.Rank)
	s.Vars["gang.size"] = strconv.Itoa(len(gm.Members))
	s.Vars["gang.leader"] = addrs[0]
	for _, rl := range ts.Gang.Roles {
		s.Vars["gang.peers."+rl.Name] = strings.Join(byRole[rl.Name], ",")
	}
	s.Vars["gang.tensorSplit"] = tensorSplit(vram)
	s.Env[EnvGangRank] = strconv.Itoa(gm.Rank)
	s.Env[EnvGangSize] = strconv.Itoa(len(gm.Members))
	s.Env[EnvGangRole] = role
	s.Env[EnvGangPeers] = strings.Join(addrs, ",")
	r.log.Info("gang member starting", "deployment", dep, "rank", gm.Rank, "role", role, "size", len(gm.Members), "peers", s.Env[EnvGangPeers])
	return s, nil
}

// gangPort is the loopback port of gang member replica of dep when this
// node runs it.
func (r *replicaRunner) gangPort(dep, replica string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ru := range r.runs {
		if ru.res.Deployment == dep && coordinator.ReplicaID(ru.res.ID) == replica && ru.gangPort > 0 {
			return ru.gangPort, true
		}
	}
	return 0, false
}
