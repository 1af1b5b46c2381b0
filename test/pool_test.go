package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/mesh"
)

// Five real shoal processes on 127.0.0.1 form one pool from one token; each
// lists all five with their declared GPUs; a DHT lookup of any member's
// record from any member returns the verified record; an outsider holding
// another secret reaches the ports and sees nothing, and nobody sees it; a
// killed member is marked dead on the others.
func TestFiveProcessesFormOnePool(t *testing.T) {
	gpus := []string{"RTX 4090:24GiB:16384", "RTX 3060:12GiB:3584", "A100 80GB:80GiB:6912", "RTX 4090:24GiB:16384", "RTX 3060:12GiB:3584"}
	first := Up(t, NewHome(t), "--gpu", gpus[0])
	token := first.Token()
	nodes := []*Node{first}
	for _, g := range gpus[1:] {
		nodes = append(nodes, Join(t, NewHome(t), token, "--gpu", g))
	}
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.PeerID()
	}
	for i, n := range nodes {
		var ms []Member
		ok := Eventually(15*time.Second, func() bool {
			ms = n.Nodes()
			for _, id := range ids {
				if StateOf(ms, id) != "alive" {
					return false
				}
			}
			return len(ms) == len(nodes)
		})
		if !ok {
			t.Fatalf("node %d lists %+v; want all %d alive", i, ms, len(nodes))
		}
		for _, m := range ms {
			j := indexOf(ids, m.PeerID)
			name, _, _ := strings.Cut(gpus[j], ":")
			if len(m.GPUs) != 1 || m.GPUs[0].Name != name || m.GPUs[0].Source != "declared" || m.GPUs[0].UUID == "" || m.GPUs[0].VRAMTotalBytes == 0 {
				t.Errorf("node %d lists member %d with GPUs %+v; want one declared %q", i, j, m.GPUs, name)
			}
		}
	}

	// Any member's record from any member, through the DHT.
	for i, n := range nodes {
		for j, id := range ids {
			var rec struct {
				PeerID    string `json:"peer_id"`
				Inventory struct {
					GPUs []struct {
						Source string `json:"source"`
					} `json:"gpus"`
				} `json:"inventory"`
			}
			ok := Eventually(10*time.Second, func() bool {
				out, _, err := Run(t, "--home", n.Home, "record", id, "-o", "json")
				return err == nil && jsonInto(out, &rec) == nil && rec.PeerID == id
			})
			if !ok || len(rec.Inventory.GPUs) != 1 || rec.Inventory.GPUs[0].Source != "declared" {
				t.Errorf("node %d: shoal record of node %d = %+v; want its verified record", i, j, rec)
			}
		}
	}

	// An outsider: the right addresses, another secret.
	good, err := mesh.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := mesh.NewPool()
	other.Bootstrap = good.Bootstrap
	outHome := NewHome(t)
	args := append([]string{"--home", outHome, "join", mesh.EncodeToken(other), "--detach"}, Loopback...)
	if _, stderr, err := Run(t, args...); err == nil {
		t.Errorf("outsider join succeeded; want refusal")
	} else if !strings.Contains(stderr, "admission") {
		t.Errorf("outsider join stderr = %q; want it to say admission was refused", stderr)
	}
	time.Sleep(time.Second)
	for i, n := range nodes {
		if ms := n.Nodes(); len(ms) != len(nodes) {
			t.Errorf("node %d lists %d members after the outsider tried; want %d", i, len(ms), len(nodes))
		}
	}

	// A killed member is marked dead on the others.
	victim := nodes[4]
	victim.Kill()
	for i, n := range nodes[:4] {
		if !Eventually(15*time.Second, func() bool { return StateOf(n.Nodes(), ids[4]) == "dead" }) {
			t.Errorf("node %d never marked the killed member dead: %+v", i, n.Nodes())
		}
	}

	// A member that leaves is listed as left.
	nodes[3].Stop()
	if !Eventually(5*time.Second, func() bool { return StateOf(nodes[0].Nodes(), ids[3]) == "left" }) {
		t.Errorf("node 0 does not list the leaver as left: %+v", nodes[0].Nodes())
	}
}

// Bad input and faults around one home dir.
func TestHomeDirFaults(t *testing.T) {
	home := NewHome(t)
	first := Up(t, home, "--gpu", "RTX 4090:24GiB")

	// A second daemon on the same home refuses to start.
	args := append([]string{"--home", home, "up", "--detach"}, Loopback...)
	if _, stderr, err := Run(t, args...); err == nil || !strings.Contains(stderr, "in use by another shoal daemon") {
		t.Errorf("second daemon on one home: err=%v stderr=%q; want a refusal naming the lock", err, stderr)
	}

	// A bad token exits non-zero before anything starts.
	for _, tok := range []string{"garbage", "shoal1.abc", first.Token()[:40]} {
		if _, stderr, err := Run(t, "--home", NewHome(t), "join", tok, "--detach"); err == nil || !strings.Contains(stderr, "token") {
			t.Errorf("join %q: err=%v stderr=%q; want non-zero exit naming the token", tok, err, stderr)
		}
	}

	// A copied home dir (same identity, another path) is refused while the
	// original is alive, and told to reset its identity.
	token := first.Token()
	second := Join(t, NewHome(t), token, "--gpu", "RTX 3060:12GiB")
	copyHome := NewHome(t)
	for _, f := range []string{"identity.key", "pool.json"} {
		b, err := os.ReadFile(filepath.Join(second.Home, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyHome, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args = append([]string{"--home", copyHome, "join", token, "--detach", "--force"}, Loopback...)
	if _, stderr, err := Run(t, args...); err == nil || !strings.Contains(stderr, "reset-identity") {
		t.Errorf("copied home join: err=%v stderr=%q; want refusal telling to run reset-identity", err, stderr)
	}
	if StateOf(first.Nodes(), second.PeerID()) != "alive" {
		t.Errorf("the original lost its membership to the copy")
	}

	// SIGKILL leaves the home usable: the same home starts again and rejoins
	// through the members it remembered (peers.json, saved every 3 s).
	time.Sleep(4 * time.Second)
	first.Kill()
	again := Up(t, home)
	if again.PeerID() == "" {
		t.Fatalf("restart after SIGKILL: no peer ID")
	}
	if !Eventually(15*time.Second, func() bool { return StateOf(again.Nodes(), second.PeerID()) == "alive" }) {
		t.Errorf("restarted node does not see the other member: %+v", again.Nodes())
	}
}

// No daemon: commands say so and exit non-zero.
func TestNoDaemon(t *testing.T) {
	_, stderr, err := Run(t, "--home", NewHome(t), "nodes")
	var ee *exec.ExitError
	if err == nil || !strings.Contains(stderr, "no shoal daemon") {
		t.Errorf("nodes with no daemon: err=%v stderr=%q; want 'no shoal daemon'", err, stderr)
	} else if ok := asExit(err, &ee); !ok || ee.ExitCode() == 0 {
		t.Errorf("nodes with no daemon exit = %v; want non-zero", err)
	}
}
