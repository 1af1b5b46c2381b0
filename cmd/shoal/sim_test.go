package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSimJSON(t *testing.T) {
	dir := t.TempDir()
	nodes := writeFile(t, dir, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model\na,64000,262144,2,T4\nb,64000,262144,8,G2\n")
	pods := writeFile(t, dir, "pods.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,4000,8192,1,1000\np1,2000,4096,1,300\np2,8000,8192,0,0\np3,16000,32768,2,1000\n")
	code, stdout, stderr := shoal(t, "sim", "--nodes", nodes, "--pods", pods, "--policy", "spread", "--seeds", "1,2", "-o", "json")
	if code != exitOK {
		t.Fatalf("shoal sim: exit %d, stderr %q", code, stderr)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("shoal sim -o json printed %q: %v", stdout, err)
	}
	for _, k := range []string{"policy", "seeds", "pods_arrived", "pods_failed", "gpu_milli_capacity", "unallocated_pct", "curve"} {
		if _, ok := out[k]; !ok {
			t.Errorf("shoal sim -o json: no %q in %s", k, stdout)
		}
	}
	if out["policy"] != "worstfit" || out["gpu_milli_capacity"] != 10000.0 {
		t.Errorf("policy %v, capacity %v; want worstfit, 10000", out["policy"], out["gpu_milli_capacity"])
	}
}

func TestSimUsageErrors(t *testing.T) {
	dir := t.TempDir()
	nodes := writeFile(t, dir, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model\na,1,1,1,T4\n")
	bad := writeFile(t, dir, "bad.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,x,1000\n")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"sim"}, exitUsage, "--nodes and --pods are required"},
		{[]string{"sim", "--nodes", nodes, "--pods", bad, "--policy", "tetris"}, exitUsage, "unknown policy"},
		{[]string{"sim", "--nodes", nodes, "--pods", bad, "--seeds", "9-1"}, exitUsage, "runs backwards"},
		{[]string{"sim", "--nodes", nodes, "--pods", bad}, exitError, "bad.csv:2: column num_gpu"},
	}
	for _, tt := range tests {
		code, _, stderr := shoal(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("shoal %v: exit %d, stderr %q; want exit %d saying %q", tt.args, code, stderr, tt.code, tt.want)
		}
	}
}
