package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkWeightsFetch1GiB moves one 1 GiB model (four 256 MiB files)
// between two shoal processes on loopback with `shoal weights pull`, and
// in the same run the same bytes by a raw TCP copy and by a plain
// single-source HTTP download (both written to disk, as the pull is).
// Target: the pull at least half the raw TCP rate.
//
//	go test -run '^$' -bench WeightsFetch1GiB -benchtime 1x ./test
func BenchmarkWeightsFetch1GiB(b *testing.B) {
	Binary(b)
	src := GenModel(b, 100, 256<<20, 256<<20, 256<<20, 256<<20)
	var total int64
	files := sortedFiles(b, src)
	for _, f := range files {
		st, _ := os.Stat(filepath.Join(src, f))
		total += st.Size()
	}
	for i := 0; i < b.N; i++ {
		// The raw copy runs before the pull as well as after it: on a
		// virtual machine whose host takes freed memory back, writing to
		// page cache that grows into fresh memory costs 1.4–2 CPU-seconds
		// per GiB, and which of the runs pays it depends on what the
		// machine freed just before. Both figures are reported.
		rawBefore := rawTCPCopy(b, src, files)
		seeder := Up(b, NewHome(b))
		id := seeder.Shoal("weights", "add", src)
		fetcher := Join(b, NewHome(b), seeder.Token())
		if !Eventually(20*time.Second, func() bool { m, ok := ModelByID(fetcher.Models(), id); return ok && m.Peers == 1 }) {
			b.Fatal("fetcher never saw the seeded model")
		}
		nodes := []*Node{seeder, fetcher}
		profiled := profileDaemons(b, nodes, 8)
		cpu0 := daemonsCPU(b, nodes)
		t0 := time.Now()
		var r PullResult
		fetcher.JSON(&r, "weights", "pull", id)
		pull := time.Since(t0)
		cpu := daemonsCPU(b, nodes) - cpu0
		profiled()
		seeder.Stop()
		fetcher.Stop()

		raw := rawTCPCopy(b, src, files)
		web := httpDownload(b, src, files)
		gb := func(d time.Duration) float64 { return float64(total) / d.Seconds() / 1e9 }
		b.ReportMetric(gb(pull), "GB/s-pull")
		b.ReportMetric(gb(raw), "GB/s-rawtcp")
		b.ReportMetric(gb(web), "GB/s-http")
		b.ReportMetric(gb(pull)/gb(raw), "pull/rawtcp")
		cpuPerGiB := cpu.Seconds() / (float64(total) / (1 << 30))
		b.ReportMetric(cpuPerGiB, "CPU-s/GiB-pull")
		b.ReportMetric(gb(rawBefore), "GB/s-rawtcp-before")
		b.Logf("%d bytes: pull %v (%.2f GB/s, %d peers, sessions by transport %v, %.2f CPU-s/GiB both daemons), raw TCP %v (%.2f GB/s; %v before the pull), HTTP %v (%.2f GB/s)",
			total, pull.Round(time.Millisecond), gb(pull), r.Peers, r.Transports, cpuPerGiB, raw.Round(time.Millisecond), gb(raw), rawBefore.Round(time.Millisecond), web.Round(time.Millisecond), gb(web))
	}
}

func sortedFiles(tb testing.TB, dir string) []string {
	var out []string
	for f := range TreeHashes(tb, dir) {
		out = append(out, f)
	}
	return out
}

// rawTCPCopy sends every file over one loopback TCP connection and writes
// it to disk on the other side; it returns the time from dial to the last
// byte written.
func rawTCPCopy(tb testing.TB, src string, files []string) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	dst := tb.TempDir()
	sizes := map[string]int64{}
	for _, f := range files {
		st, _ := os.Stat(filepath.Join(src, f))
		sizes[f] = st.Size()
	}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		for i, f := range files {
			out, err := os.Create(filepath.Join(dst, fmt.Sprint(i)))
			if err != nil {
				done <- err
				return
			}
			_, err = io.CopyN(out, c, sizes[f])
			out.Close()
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	t0 := time.Now()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range files {
		in, err := os.Open(filepath.Join(src, f))
		if err != nil {
			tb.Fatal(err)
		}
		_, err = io.Copy(c, in)
		in.Close()
		if err != nil {
			tb.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	return time.Since(t0)
}

// httpDownload serves src with net/http and downloads every file, one
// after another from the one server, to disk.
func httpDownload(tb testing.TB, src string, files []string) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(src))}
	go srv.Serve(ln)
	defer srv.Close()
	dst := tb.TempDir()
	t0 := time.Now()
	for i, f := range files {
		resp, err := http.Get("http://" + ln.Addr().String() + "/" + f)
		if err != nil {
			tb.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, fmt.Sprint(i)))
		if err != nil {
			tb.Fatal(err)
		}
		_, err = io.Copy(out, resp.Body)
		resp.Body.Close()
		out.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			tb.Fatalf("GET %s: %d %v", f, resp.StatusCode, err)
		}
	}
	return time.Since(t0)
}

// shapedRate is each node's link in each direction: 50 MB/s.
const shapedRate = "400mbit"

// BenchmarkWeightsShaped runs every shoal node in its own network
// namespace, joined through a bridge in a hub namespace by a veth pair
// whose two ends are capped at 50 MB/s by tc (so each node uploads and
// downloads at most 50 MB/s). One seeder holds four 256 MiB models; for
// N = 1, 2, 4, 8 it pulls a fresh model on N nodes at once and reports the
// wall time until the last finishes and the bytes the seeder's link
// carried up, and the CPU time all daemons spent per GiB the fetchers
// received (the nodes share this machine's cores, so at large N the wall
// time follows the CPU). Targets: N = 8 within 2x the time of N = 1, the
// seeder uploading at most 1.5x the model's size at N = 8.
//
// It needs root and iproute2 (`ip`, `tc`: apt-get install -y iproute2),
// and skips with a message without them. Everything it creates is removed
// afterwards.
//
//	sudo go test -run '^$' -bench WeightsShaped -benchtime 1x ./test
func BenchmarkWeightsShaped(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("shaped benchmark needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("shaped benchmark needs %s (apt-get install -y iproute2)", tool)
		}
	}
	Binary(b)
	const fetchers = 8
	sn := newShapedNet(b, fetchers+1)
	var srcs []string
	for k := 0; k < 4; k++ {
		srcs = append(srcs, GenModel(b, uint64(200+k), 128<<20, 128<<20))
	}
	for i := 0; i < b.N; i++ {
		seeder := sn.start(b, 0, NewHome(b), "up")
		var ids []string
		for _, src := range srcs {
			ids = append(ids, seeder.Shoal("weights", "add", src))
		}
		token := seeder.Token()
		var nodes []*Node
		for j := 1; j <= fetchers; j++ {
			nodes = append(nodes, sn.start(b, j, NewHome(b), "join", token))
		}
		for j, n := range nodes {
			if !Eventually(30*time.Second, func() bool { m, ok := ModelByID(n.Models(), ids[0]); return ok && m.Peers == 1 }) {
				b.Fatalf("fetcher %d never saw the seeded models", j)
			}
		}
		idle0 := daemonsCPU(b, append(nodes, seeder))
		time.Sleep(3 * time.Second)
		idle := (daemonsCPU(b, append(nodes, seeder)) - idle0) / 3
		b.Logf("%d daemons idle: %v CPU per second together", len(nodes)+1, idle)
		var n1 time.Duration
		for k, n := range []int{1, 2, 4, 8} {
			id := ids[k]
			up0 := sn.rxBytes(b, 0)
			cpu0 := daemonsCPU(b, append(nodes, seeder))
			profiled := func() {}
			if n == 8 { // the profiles (SHOAL_BENCH_PPROF) cover the most crowded round
				profiled = profileDaemons(b, append(nodes, seeder), 10)
			}
			t0 := time.Now()
			var wg sync.WaitGroup
			errs := make([]error, n)
			res := make([]PullResult, n)
			for j := 0; j < n; j++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, stderr, err := Run(b, "--home", nodes[j].Home, "weights", "pull", id, "-o", "json")
					if err == nil {
						err = json.Unmarshal([]byte(out), &res[j])
					}
					if err != nil {
						errs[j] = fmt.Errorf("%v: %s", err, stderr)
					}
				}()
			}
			wg.Wait()
			wall := time.Since(t0)
			up := sn.rxBytes(b, 0) - up0
			cpu := daemonsCPU(b, append(nodes, seeder)) - cpu0
			if os.Getenv("SHOAL_BENCH_FAULTS") != "" {
				var flt int64
				for _, d := range append(nodes, seeder) {
					flt += procStat(b, d.PID, statMinFlt)
				}
				b.Logf("N=%d: minor faults so far %d", n, flt)
			}
			profiled()
			for _, err := range errs {
				if err != nil {
					b.Fatalf("N=%d: pull: %v", n, err)
				}
			}
			if n == 1 {
				n1 = wall
			}
			var fetched, wasted int64
			transports := map[string]int{}
			var done []float64 // each fetcher's pull, as it measured it
			for _, r := range res {
				done = append(done, r.ElapsedSec)
				fetched += r.FetchedBytes
				wasted += r.WastedBytes
				for t, k := range r.Transports {
					transports[t] += k
				}
			}
			size := float64(256 << 20)
			perGiB := cpu.Seconds() / (float64(n) * size / (1 << 30))
			b.ReportMetric(wall.Seconds(), fmt.Sprintf("s/N=%d", n))
			b.ReportMetric(float64(up)/size, fmt.Sprintf("seeder-up/model/N=%d", n))
			b.ReportMetric(perGiB, fmt.Sprintf("cpu-s/GiB/N=%d", n))
			slices.Sort(done)
			b.Logf("N=%d: wall %v (%.2fx N=1; the fetchers' own times %.2f–%.2f s, median %.2f), seeder uploaded %d bytes (%.2fx the model), fetchers received %d bytes (%d wasted; sessions by transport %v), daemons' CPU %v (%.2f s per GiB fetched)",
				n, wall.Round(10*time.Millisecond), wall.Seconds()/n1.Seconds(), done[0], done[len(done)-1], done[len(done)/2], up, float64(up)/size, fetched, wasted, transports, cpu.Round(10*time.Millisecond), perGiB)
		}
		for _, n := range append(nodes, seeder) {
			n.Stop()
		}
	}
}

// profileDaemons starts a CPU profile of each daemon when
// SHOAL_BENCH_PPROF names a directory, and returns a func that waits for
// the profiles and writes them there as <pid>.pprof (go tool pprof reads
// them). Without the variable it does nothing.
func profileDaemons(tb testing.TB, nodes []*Node, seconds int) func() {
	dir := os.Getenv("SHOAL_BENCH_PPROF")
	if dir == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(n.Home, "control.sock"))
			}}}
			resp, err := c.Get(fmt.Sprintf("http://shoal/debug/pprof/profile?seconds=%d", seconds))
			if err != nil {
				tb.Errorf("profile %d: %v", n.PID, err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d.pprof", n.PID)))
			if err != nil {
				tb.Errorf("profile: %v", err)
				return
			}
			defer f.Close()
			io.Copy(f, resp.Body)
		}()
	}
	time.Sleep(100 * time.Millisecond) // the profiles have started
	return wg.Wait
}

// daemonsCPU is the user+system CPU time the daemons have used so far
// (from /proc/PID/stat, in clock ticks of 10 ms).
func daemonsCPU(tb testing.TB, nodes []*Node) time.Duration {
	tb.Helper()
	var ticks int64
	for _, n := range nodes {
		ticks += procStat(tb, n.PID, statUTime) + procStat(tb, n.PID, statSTime)
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// Fields of /proc/PID/stat, counted from 1 as proc(5) does.
const (
	statMinFlt = 10
	statUTime  = 14
	statSTime  = 15
)

// procStat reads field (numbered as in proc(5)) of /proc/pid/stat.
func procStat(tb testing.TB, pid, field int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	// The fields after the command name (which ends at the last ')')
	// start with field 3, the state.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < field-2 {
		tb.Fatalf("short /proc/%d/stat", pid)
	}
	var v int64
	fmt.Sscan(f[field-3], &v)
	return v
}

// shapedNet is a hub namespace with a bridge and one namespace per node.
type shapedNet struct {
	prefix string
	n      int
}

func newShapedNet(tb testing.TB, n int) *shapedNet {
	s := &shapedNet{prefix: fmt.Sprintf("shoalb%d", os.Getpid()%100000), n: n}
	hub := s.hub()
	sh := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			tb.Skipf("cannot build the shaped network (%s: %v: %s)", strings.Join(args, " "), err, out)
		}
	}
	tb.Cleanup(func() {
		for i := 0; i < n; i++ {
			_ = exec.Command("ip", "netns", "del", s.ns(i)).Run()
		}
		_ = exec.Command("ip", "netns", "del", hub).Run()
	})
	sh("ip", "netns", "add", hub)
	sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
	sh("ip", "-n", hub, "link", "set", "br0", "up")
	for i := 0; i < n; i++ {
		ns := s.ns(i)
		sh("ip", "netns", "add", ns)
		sh("ip", "-n", ns, "link", "set", "lo", "up")
		sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", s.hubIf(i), "netns", hub)
		sh("ip", "-n", ns, "addr", "add", s.addr(i)+"/24", "dev", "eth0")
		sh("ip", "-n", ns, "link", "set", "eth0", "up")
		sh("ip", "-n", hub, "link", "set", s.hubIf(i), "master", "br0")
		sh("ip", "-n", hub, "link", "set", s.hubIf(i), "up")
		// Upload cap on the node's end, download cap on the hub's end.
		sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", shapedRate, "burst", "1mb", "latency", "50ms")
		sh("tc", "-n", hub, "qdisc", "add", "dev", s.hubIf(i), "root", "tbf", "rate", shapedRate, "burst", "1mb", "latency", "50ms")
	}
	return s
}

func (s *shapedNet) hub() string        { return s.prefix + "hub" }
func (s *shapedNet) ns(i int) string    { return fmt.Sprintf("%sn%d", s.prefix, i) }
func (s *shapedNet) hubIf(i int) string { return fmt.Sprintf("sh%d", i) }
func (s *shapedNet) addr(i int) string  { return fmt.Sprintf("10.77.0.%d", i+1) }

// start runs `shoal --home HOME ARGS --detach` inside node i's namespace.
func (s *shapedNet) start(tb testing.TB, i int, home string, args ...string) *Node {
	tb.Helper()
	full := []string{"netns", "exec", s.ns(i), Binary(tb), "--home", home}
	full = append(full, args...)
	full = append(full, "--detach", "--mdns=false", "--nat=false",
		"--listen", "/ip4/"+s.addr(i)+"/tcp/0", "--listen", "/ip4/"+s.addr(i)+"/udp/0/quic-v1")
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		tb.Fatalf("shoal %s in %s: %v\n%s", args[0], s.ns(i), err, out)
	}
	n := &Node{tb: tb, Home: home}
	var st struct {
		PID int `json:"pid"`
	}
	n.JSON(&st, "status")
	n.PID = st.PID
	tb.Cleanup(n.Stop)
	return n
}

// rxBytes is what the hub's end of node i's link received: node i's upload.
func (s *shapedNet) rxBytes(tb testing.TB, i int) int64 {
	tb.Helper()
	out, err := exec.Command("ip", "-n", s.hub(), "-j", "-s", "link", "show", "dev", s.hubIf(i)).Output()
	if err != nil {
		tb.Fatalf("link stats: %v", err)
	}
	var links []struct {
		Stats64 struct {
			RX struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		tb.Fatalf("link stats %s: %v", out, err)
	}
	return links[0].Stats64.RX.Bytes
}
