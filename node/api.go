package node

import (
	"sort"
	"time"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
)

// The JSON bodies of the control API. The CLI decodes into these types; a
// field added here is an API change for scripts that read `-o json`.

// Status is GET /v1/status: this node.
type Status struct {
	PeerID        string      `json:"peer_id"`
	PoolID        string      `json:"pool_id"`
	Name          string      `json:"name"`
	Version       string      `json:"version"`
	Home          string      `json:"home"`
	PID           int         `json:"pid"`
	Addrs         []string    `json:"addrs"`
	StartedAt     time.Time   `json:"started_at"`
	Ready         bool        `json:"ready"`   // serving and in the pool; false while leaving
	Resumed       bool        `json:"resumed"` // the pool was already in this home at start
	Members       MemberCount `json:"members"`
	InventoryMode string      `json:"inventory_mode"`    // "nvml", "declared" or "none"
	Gateway       string      `json:"gateway,omitempty"` // the gateway's address; empty: none
	// Runtime says how this node runs replicas (process, docker or auto)
	// and why, e.g. "process (auto: no Docker engine answers)".
	Runtime string `json:"runtime,omitempty"`
	// APIKeys is how many API keys the gateway requires one of (the keys
	// themselves are never shown); 0: none.
	APIKeys int `json:"api_keys,omitempty"`
}

// MemberCount counts the members this node knows of.
type MemberCount struct {
	Alive int `json:"alive"` // in state alive (this node included)
	Total int `json:"total"` // in any state: alive, suspect, dead, left
}

// Member is one element of GET /v1/nodes.
type Member struct {
	PeerID   string     `json:"peer_id"`
	Name     string     `json:"name"`
	State    mesh.State `json:"state"` // alive, suspect, dead or left
	Self     bool       `json:"self"`
	Addrs    []string   `json:"addrs"`
	LastSeen time.Time  `json:"last_seen"`
	// GPUs come from the member's record; free VRAM and utilisation are
	// overlaid from its latest heartbeat when that reports every GPU.
	GPUs          []hardware.GPU `json:"gpus"`
	Host          hardware.Host  `json:"host"`
	DriverVersion string         `json:"driver_version"`
	CUDAVersion   string         `json:"cuda_version"`
	Version       string         `json:"version,omitempty"`
	Load          mesh.Load      `json:"load"`
	// Free is what the member's ledger has not promised to any
	// reservation (from its record); nil until it announced it.
	Free *mesh.FreeCapacity `json:"free,omitempty"`
}

// TokenResponse is GET /v1/token.
type TokenResponse struct {
	Token string `json:"token"`
}

// LeaveResponse is POST /v1/leave.
type LeaveResponse struct {
	PoolID string `json:"pool_id"`
	PeerID string `json:"peer_id"`
}

// errorResponse is the body of every error status.
type errorResponse struct {
	Error string `json:"error"`
}

// memberViews turns mesh members into the API's view: self first, then by
// peer ID.
func memberViews(ms []mesh.Member) []Member {
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, memberView(m))
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Self != out[j].Self {
			return out[i].Self
		}
		return out[i].PeerID < out[j].PeerID
	})
	return out
}

func memberView(m mesh.Member) Member {
	v := Member{
		PeerID:   m.PeerID.String(),
		State:    m.State,
		Self:     m.Self,
		Addrs:    []string{},
		LastSeen: m.LastSeen,
		GPUs:     []hardware.GPU{},
		Load:     m.Load,
	}
	if r := m.Record; r != nil {
		v.Name = r.Name
		v.Version = r.Version
		if r.Addrs != nil {
			v.Addrs = append(v.Addrs, r.Addrs...)
		}
		v.GPUs = append(v.GPUs, r.Inventory.GPUs...)
		v.Host = r.Inventory.Host
		v.DriverVersion = r.Inventory.DriverVersion
		v.CUDAVersion = r.Inventory.CUDAVersion
		v.Free = r.Free
	}
	if n := len(v.GPUs); n > 0 {
		if len(m.Load.VRAMFreeBytes) == n {
			for i := range v.GPUs {
				v.GPUs[i].VRAMFreeBytes = m.Load.VRAMFreeBytes[i]
			}
		}
		if len(m.Load.GPUUtilPct) == n {
			for i := range v.GPUs {
				v.GPUs[i].UtilizationPct = m.Load.GPUUtilPct[i]
			}
		}
	}
	return v
}

func countMembers(ms []mesh.Member) MemberCount {
	c := MemberCount{Total: len(ms)}
	for _, m := range ms {
		if m.State == mesh.StateAlive {
			c.Alive++
		}
	}
	return c
}
