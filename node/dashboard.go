package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalmesh/shoal/dashboard"
	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
	"github.com/shoalmesh/shoal/weightcache"
)

// fetchingReason starts the reason of a replica whose node is fetching its
// weights (replicaRunner.run sets it); the dashboard lists those as
// transfers in progress.
const fetchingReason = "fetching weights "

// dashboardView adapts the daemon's state to the dashboard's views: the
// members (records and heartbeats), the deployment records with the
// replicas nodes report, the weight cache, and the gateway's in-flight
// gauge. It reads what the control API reads and changes nothing.
type dashboardView struct {
	self    peer.ID
	pool    string
	version string
	members Membership
	sv      *serving
	gather  prometheus.Gatherer // nil: no in-flight counts
}

var (
	_ dashboard.SelfSource       = dashboardView{}
	_ dashboard.NodeSource       = dashboardView{}
	_ dashboard.DeploymentSource = dashboardView{}
	_ dashboard.WeightSource     = dashboardView{}
	_ dashboard.CreditSource     = controlCredits{}
)

// withDashboard serves the dashboard, its API and /metrics in front of
// the gateway gw, behind the gateway's API keys. Should the dashboard not
// start, the gateway runs alone.
func withDashboard(gw http.Handler, sv *serving, m any, reg prometheus.Registerer, keys []string, log *slog.Logger) http.Handler {
	v := dashboardView{self: sv.self, members: sv.members, sv: sv}
	if sv.runner != nil {
		v.version = sv.runner.version
	}
	if s, ok := m.(interface{ PoolID() string }); ok {
		v.pool = s.PoolID()
	}
	g, _ := reg.(prometheus.Gatherer)
	v.gather = g
	cfg := dashboard.Config{
		Self: v, Nodes: v, Deployments: v, Weights: v,
		APIKeys: keys,
		Logger:  log.With("component", "dashboard"),
	}
	if g != nil {
		cfg.Metrics = g
	}
	if sv.dep != nil && sv.dep.cfg.Home != "" {
		cfg.Credits = controlCredits{client: NewClient(sv.dep.cfg.Home)}
	}
	d, err := dashboard.New(cfg)
	if err != nil {
		log.Warn("dashboard not served", "err", err)
		return gw
	}
	return d.Handler(gw)
}

// Self implements dashboard.SelfSource.
func (v dashboardView) Self() dashboard.Self {
	s := dashboard.Self{PeerID: v.self.String(), PoolID: v.pool, Version: v.version}
	for _, m := range v.members.Members() {
		if m.Self && m.Record != nil {
			s.Name = m.Record.Name
		}
	}
	return s
}

// Nodes implements dashboard.NodeSource: the members as GET /v1/nodes
// shows them, with the capacity their ledgers promised.
func (v dashboardView) Nodes() []dashboard.Node {
	ms := v.members.Members()
	views := memberViews(ms)
	free := map[string]*mesh.FreeCapacity{}
	models := map[string]int{}
	for _, m := range ms {
		if m.Record != nil {
			free[m.PeerID.String()] = m.Record.Free
			models[m.PeerID.String()] = len(m.Record.Models)
		}
	}
	out := make([]dashboard.Node, 0, len(views))
	for _, mv := range views {
		n := dashboard.Node{
			PeerID: mv.PeerID, Name: mv.Name, State: string(mv.State), Self: mv.Self,
			LastSeen: mv.LastSeen, Version: mv.Version,
			CPUCores: mv.Host.CPUCores, CPULoad1: mv.Load.CPULoad1,
			MemoryTotalBytes: mv.Host.MemoryTotalBytes, MemoryFreeBytes: mv.Host.MemoryFreeBytes,
			GPUs: make([]dashboard.GPU, 0, len(mv.GPUs)), Models: models[mv.PeerID],
		}
		for _, g := range mv.GPUs {
			n.GPUs = append(n.GPUs, dashboardGPU(g, free[mv.PeerID]))
		}
		out = append(out, n)
	}
	return out
}

// gpuSource names a GPU's source the way the dashboard and the metrics do.
func gpuSource(s hardware.Source) string {
	if s == hardware.SourceNVML {
		return dashboard.SourceMeasured
	}
	return dashboard.SourceDeclared
}

func dashboardGPU(g hardware.GPU, free *mesh.FreeCapacity) dashboard.GPU {
	out := dashboard.GPU{
		Index: g.Index, UUID: g.UUID, Name: g.Name,
		VRAMTotalBytes: g.VRAMTotalBytes, UtilizationPct: g.UtilizationPct,
		CUDACores: g.CUDACores, TemperatureC: g.TemperatureC, Source: gpuSource(g.Source),
	}
	if g.VRAMFreeBytes < g.VRAMTotalBytes {
		out.VRAMUsedBytes = g.VRAMTotalBytes - g.VRAMFreeBytes
	}
	if free == nil {
		return out
	}
	for _, f := range free.GPUs {
		if f.UUID != g.UUID {
			continue
		}
		out.Reserved = true
		out.ReservedMilli = min(max(1000-f.Milli, 0), 1000)
		if f.VRAMBytes < 0 {
			out.ReservedVRAMBytes = g.VRAMTotalBytes
		} else if uint64(f.VRAMBytes) < g.VRAMTotalBytes {
			out.ReservedVRAMBytes = g.VRAMTotalBytes - uint64(f.VRAMBytes)
		}
	}
	return out
}

// Deployments implements dashboard.DeploymentSource: the records as
// `shoal ps` shows them, each placed replica with the state its node
// reports.
func (v dashboardView) Deployments() []dashboard.Deployment {
	if v.sv.dep == nil {
		return nil
	}
	deps := v.sv.dep.list()
	names := v.names()
	inFlight := v.inFlight()
	waiting := v.waiting()
	out := make([]dashboard.Deployment, 0, len(deps))
	for _, d := range deps {
		st := d.Status
		x := dashboard.Deployment{
			Name: d.ID, Template: d.Spec.Template, State: string(st.State), Reason: st.Reason,
			Desired: d.Spec.Desired(), ScaleToZero: d.Spec.ScaleToZero, Coordinator: st.Coordinator,
			InFlight: inFlight[d.ID], Waiting: waiting[d.ID], Replicas: []dashboard.Replica{},
		}
		if x.State == "" {
			x.State = "submitted"
		}
		if x.ScaleToZero {
			x.Desired = d.Spec.Request.Replicas
			if len(st.Replicas) == 0 && st.State == coordinator.StatePlaced {
				x.State = "cold"
			}
		}
		used := map[string]bool{}
		for _, r := range st.Replicas {
			for i, s := range r.Slots {
				rep := dashboard.Replica{ID: r.ID, Node: s.Node, NodeName: names[s.Node], State: "placed"}
				if len(r.Slots) > 1 {
					rep.ID = fmt.Sprintf("%s#%d", r.ID, i)
				}
				for _, g := range s.GPUs {
					rep.GPUs = append(rep.GPUs, g.UUID)
				}
				for _, run := range d.Runs {
					if !used[run.Reservation] && run.Node == s.Node && coordinator.ReplicaID(run.Reservation) == r.ID {
						used[run.Reservation] = true
						rep.State, rep.Reason, rep.InFlight = run.State, run.Reason, run.InFlight
						break
					}
				}
				x.Replicas = append(x.Replicas, rep)
			}
		}
		// Replicas still running that the status no longer lists (being
		// stopped, or reported before the status reached this node).
		for _, run := range d.Runs {
			if !used[run.Reservation] {
				x.Replicas = append(x.Replicas, dashboard.Replica{
					ID: coordinator.ReplicaID(run.Reservation), Node: run.Node, NodeName: names[run.Node],
					GPUs: run.GPUs, State: run.State, Reason: run.Reason, InFlight: run.InFlight,
				})
			}
		}
		x.Warmth = "cold"
		for _, r := range x.Replicas {
			switch r.State {
			case PhaseReady:
				x.Warmth = "warm"
			case PhaseStarting, PhaseBackoff, "placed":
				if x.Warmth == "cold" {
					x.Warmth = "starting"
				}
			}
		}
		out = append(out, x)
	}
	return out
}

// names maps peer IDs to member names.
func (v dashboardView) names() map[string]string {
	out := map[string]string{}
	for _, m := range v.members.Members() {
		if m.Record != nil {
			out[m.PeerID.String()] = m.Record.Name
		}
	}
	return out
}

// inFlight reads this node's gateway gauge shoal_gateway_in_flight by
// deployment: the same figure /metrics shows.
func (v dashboardView) inFlight() map[string]int {
	out := map[string]int{}
	if v.gather == nil {
		return out
	}
	mfs, err := v.gather.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_gateway_in_flight" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "deployment" {
					out[l.GetValue()] += int(m.GetGauge().GetValue())
				}
			}
		}
	}
	return out
}

// waiting sums the requests the pool's gateways queue per deployment: this
// node's own queue and the alive members' fresh serving reports.
func (v dashboardView) waiting() map[string]int {
	out := map[string]int{}
	for dep, n := range v.sv.localWaiting() {
		out[dep] += n
	}
	for _, r := range v.sv.fresh() {
		for dep, n := range r.Waiting {
			out[dep] += n
		}
	}
	return out
}

// Weights implements dashboard.WeightSource: the complete models each
// alive member lists in its record, this node's cache (partial copies
// included), and the replicas whose nodes are fetching their weights.
func (v dashboardView) Weights() dashboard.Weights {
	ms := v.members.Members()
	byID := map[string]*dashboard.Model{}
	model := func(id, name string, size int64) *dashboard.Model {
		m := byID[id]
		if m == nil {
			m = &dashboard.Model{ID: id, Holders: []dashboard.Holder{}}
			byID[id] = m
		}
		if m.Name == "" {
			m.Name = name
		}
		if m.SizeBytes == 0 {
			m.SizeBytes = size
		}
		return m
	}
	names := map[string]string{}
	for _, mb := range ms {
		if mb.Record != nil {
			names[mb.PeerID.String()] = mb.Record.Name
		}
		if mb.Self || mb.State != mesh.StateAlive || mb.Record == nil {
			continue
		}
		for _, ref := range mb.Record.Models {
			m := model(ref.ID, ref.Name, ref.SizeBytes)
			m.Holders = append(m.Holders, dashboard.Holder{PeerID: mb.PeerID.String(), Name: mb.Record.Name, State: string(weightcache.StateComplete)})
		}
	}
	var w dashboard.Weights
	self := v.self.String()
	if wc := v.sv.runner.cache(); wc != nil {
		for _, in := range wc.store.List() {
			m := model(in.ID, in.Name, in.SizeBytes)
			m.Holders = append(m.Holders, dashboard.Holder{PeerID: self, Name: names[self], State: string(in.State), Pins: in.Pins})
			if in.State == weightcache.StatePartial {
				w.Transfers = append(w.Transfers, dashboard.Transfer{
					Node: self, NodeName: names[self], Model: displayName(in.Name, in.ID), SizeBytes: in.SizeBytes, For: "cache",
				})
			}
		}
	}
	for _, run := range v.sv.runs() {
		if run.State != PhaseStarting || !strings.HasPrefix(run.Reason, fetchingReason) {
			continue
		}
		ref := strings.TrimPrefix(run.Reason, fetchingReason)
		t := dashboard.Transfer{Node: run.Node, NodeName: names[run.Node], Model: ref, For: "replica of " + run.Deployment}
		for _, m := range byID {
			if m.Name == ref || m.ID == ref {
				t.SizeBytes = m.SizeBytes
			}
		}
		w.Transfers = append(w.Transfers, t)
	}
	for _, m := range byID {
		sort.Slice(m.Holders, func(i, j int) bool { return m.Holders[i].PeerID < m.Holders[j].PeerID })
		w.Models = append(w.Models, *m)
	}
	sort.Slice(w.Models, func(i, j int) bool {
		if w.Models[i].Name != w.Models[j].Name {
			return w.Models[i].Name < w.Models[j].Name
		}
		return w.Models[i].ID < w.Models[j].ID
	})
	return w
}

// cache is the runner's weight cache; nil without one.
func (r *replicaRunner) cache() *weights {
	if r == nil {
		return nil
	}
	return r.weights
}

func displayName(name, id string) string {
	if name != "" {
		return name
	}
	return id
}

// controlCredits reads the market ledger from this daemon's own control
// API (GET /v1/credits over the control socket): the dashboard shows
// exactly what `shoal credits` does, and a daemon without that endpoint
// shows "not available".
type controlCredits struct {
	client *Client
}

// Credits implements dashboard.CreditSource.
func (c controlCredits) Credits(ctx context.Context) (market.Report, error) {
	rep, err := c.client.Credits(ctx)
	var api *APIError
	switch {
	case errors.As(err, &api) && api.StatusCode == http.StatusNotFound:
		return market.Report{}, fmt.Errorf("%w: this node keeps no market ledger (no GET /v1/credits)", dashboard.ErrUnavailable)
	case errors.Is(err, ErrNoDaemon):
		return market.Report{}, fmt.Errorf("%w: the control API is not up yet", dashboard.ErrUnavailable)
	case err != nil:
		return market.Report{}, err
	}
	return rep.Report, nil
}
