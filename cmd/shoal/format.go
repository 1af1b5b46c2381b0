package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoalmesh/shoal/hardware"
	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/node"
)

// peerPrefixLen is how much of a peer ID tables show; `shoal record`
// accepts such a prefix.
const peerPrefixLen = 12

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeNodesTable prints one row per GPU; a member without GPUs gets one
// row with "-".
func writeNodesTable(w io.Writer, ms []node.Member) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "PEER\tNAME\tSTATE\tGPU\tVRAM\tRESERVED\tCUDA CORES\tLINK\tUTIL\tSOURCE")
	for _, m := range ms {
		peer := shortPeer(m.PeerID)
		name := dash(m.Name)
		if len(m.GPUs) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\n", peer, name, m.State)
			continue
		}
		for _, g := range m.GPUs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				peer, name, m.State, dash(g.Name), vram(g.VRAMFreeBytes, g.VRAMTotalBytes), reserved(g, m.Free),
				cores(g.CUDACores), link(g), util(g), dash(string(g.Source)))
		}
	}
	return tw.Flush()
}

// reserved is what the member's ledger has promised of GPU g, from the
// free capacity it announces: the share of the card and the VRAM, e.g.
// "0.5 GPU, 12.0 GiB"; "-" when nothing is promised or the member
// announced nothing (yet) for the card.
func reserved(g hardware.GPU, free *mesh.FreeCapacity) string {
	if free == nil {
		return "-"
	}
	for _, f := range free.GPUs {
		if f.UUID != g.UUID {
			continue
		}
		milli := max(0, 1000-f.Milli)
		bytes := max(0, int64(g.VRAMTotalBytes)-f.VRAMBytes)
		if milli == 0 && bytes == 0 {
			return "-"
		}
		share := strconv.FormatFloat(float64(milli)/1000, 'f', -1, 64) + " GPU"
		if bytes == 0 {
			return share
		}
		return share + ", " + bytesOrDash(uint64(bytes))
	}
	return "-"
}

func shortPeer(id string) string {
	if len(id) > peerPrefixLen {
		return id[:peerPrefixLen]
	}
	return dash(id)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// vram formats free/total in the unit of total: "23.5/24.0 GiB".
func vram(free, total uint64) string {
	if total == 0 {
		return "-"
	}
	units := []struct {
		name string
		size float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if float64(total) >= u.size {
			return fmt.Sprintf("%.1f/%.1f %s", float64(free)/u.size, float64(total)/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d/%d B", free, total)
}

func cores(n int) string {
	if n <= 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// link names the GPU's fastest known interconnect.
func link(g hardware.GPU) string {
	switch {
	case len(g.NVLinks) > 0:
		return fmt.Sprintf("NVLink x%d", len(g.NVLinks))
	case g.PCIeGen > 0 && g.PCIeWidth > 0:
		return fmt.Sprintf("PCIe%d x%d", g.PCIeGen, g.PCIeWidth)
	case g.PCIeGen > 0:
		return fmt.Sprintf("PCIe%d", g.PCIeGen)
	}
	return "-"
}

// util is "-" for a declared GPU: nothing measured it.
func util(g hardware.GPU) string {
	if g.Source != hardware.SourceNVML {
		return "-"
	}
	return fmt.Sprintf("%d%%", g.UtilizationPct)
}

// writeStatus prints this node's status as aligned key/value lines.
func writeStatus(w io.Writer, st node.Status, now time.Time) error {
	tw := newTable(w)
	ready := "yes"
	if !st.Ready {
		ready = "no"
	}
	fmt.Fprintf(tw, "PEER\t%s\n", st.PeerID)
	fmt.Fprintf(tw, "POOL\t%s\n", dash(st.PoolID))
	fmt.Fprintf(tw, "NAME\t%s\n", dash(st.Name))
	fmt.Fprintf(tw, "VERSION\t%s\n", dash(st.Version))
	fmt.Fprintf(tw, "HOME\t%s\n", dash(st.Home))
	if len(st.Addrs) == 0 {
		fmt.Fprintf(tw, "ADDRS\t-\n")
	}
	for i, addr := range st.Addrs {
		key := ""
		if i == 0 {
			key = "ADDRS"
		}
		fmt.Fprintf(tw, "%s\t%s\n", key, addr)
	}
	fmt.Fprintf(tw, "MEMBERS\t%d/%d alive\n", st.Members.Alive, st.Members.Total)
	fmt.Fprintf(tw, "UPTIME\t%s\n", uptime(st.StartedAt, now))
	fmt.Fprintf(tw, "INVENTORY\t%s\n", dash(st.InventoryMode))
	fmt.Fprintf(tw, "READY\t%s\n", ready)
	if st.Gateway != "" {
		fmt.Fprintf(tw, "GATEWAY\thttp://%s\n", st.Gateway)
	}
	if st.APIKeys > 0 {
		fmt.Fprintf(tw, "API KEYS\t%d\n", st.APIKeys)
	}
	if st.Runtime != "" {
		fmt.Fprintf(tw, "RUNTIME\t%s\n", st.Runtime)
	}
	return tw.Flush()
}

func uptime(start, now time.Time) string {
	if start.IsZero() {
		return "-"
	}
	d := now.Sub(start).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String()
}

// writeRecord prints a node record. It decodes raw itself so that it
// prints what the daemon sent, not what an older CLI knows of.
func writeRecord(w io.Writer, raw json.RawMessage) error {
	var r mesh.Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decode record: %w", err)
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "PEER\t%s\n", r.PeerID)
	fmt.Fprintf(tw, "NAME\t%s\n", dash(r.Name))
	fmt.Fprintf(tw, "SEQ\t%d\n", r.Seq)
	fmt.Fprintf(tw, "INSTANCE\t%s\n", dash(r.Instance))
	fmt.Fprintf(tw, "VERSION\t%s\n", dash(r.Version))
	fmt.Fprintf(tw, "STARTED\t%s\n", timeOrDash(r.StartedAt))
	fmt.Fprintf(tw, "PUBLISHED\t%s\n", timeOrDash(r.PublishedAt))
	fmt.Fprintf(tw, "ADDRS\t%s\n", dash(strings.Join(r.Addrs, " ")))
	h := r.Inventory.Host
	fmt.Fprintf(tw, "HOST\t%s/%s, %d CPU cores, memory %s, disk free %s\n",
		dash(h.OS), dash(h.Arch), h.CPUCores, vram(h.MemoryFreeBytes, h.MemoryTotalBytes), bytesOrDash(h.DiskFreeBytes))
	fmt.Fprintf(tw, "DRIVER\t%s (CUDA %s)\n", dash(r.Inventory.DriverVersion), dash(r.Inventory.CUDAVersion))
	if r.Price.PerGPUHour > 0 {
		fmt.Fprintf(tw, "PRICE\t%g %s per GPU-hour\n", r.Price.PerGPUHour, r.Price.Currency)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Inventory.GPUs) == 0 {
		_, err := fmt.Fprintln(w, "GPUS\tnone")
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "INDEX\tUUID\tGPU\tVRAM\tCUDA CORES\tLINK\tUTIL\tSOURCE")
	for _, g := range r.Inventory.GPUs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Index, dash(g.UUID), dash(g.Name),
			vram(g.VRAMFreeBytes, g.VRAMTotalBytes), cores(g.CUDACores), link(g), util(g), dash(string(g.Source)))
	}
	return tw.Flush()
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func bytesOrDash(b uint64) string {
	if b == 0 {
		return "-"
	}
	s := vram(b, b) // "x/x UNIT"
	if i := strings.IndexByte(s, '/'); i >= 0 {
		if j := strings.IndexByte(s, ' '); j > i {
			return s[:i] + s[j:]
		}
	}
	return s
}
