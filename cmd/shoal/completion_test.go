package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node"
)

// complete runs the shell's completion request (`shoal __complete ARGS...`,
// what the scripts call on Tab) and returns the names offered and the
// directive line.
func complete(t *testing.T, args ...string) (names []string, directive string) {
	t.Helper()
	code, stdout, stderr := shoal(t, append([]string{"__complete"}, args...)...)
	if code != exitOK {
		t.Fatalf("shoal __complete %q: exit %d, stderr %q", args, code, stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if strings.HasPrefix(line, ":") {
			directive = line
			continue
		}
		name, _, _ := strings.Cut(line, "\t")
		names = append(names, name)
	}
	return names, directive
}

func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash":       "# bash completion V2 for shoal",
		"zsh":        "#compdef shoal",
		"fish":       "complete -c shoal",
		"powershell": "Register-ArgumentCompleter",
	} {
		code, stdout, stderr := shoal(t, "completion", shell)
		if code != exitOK || !strings.Contains(stdout, marker) {
			t.Errorf("shoal completion %s: exit %d, stderr %q, script has %q: %v; want 0 and the script", shell, code, stderr, marker, strings.Contains(stdout, marker))
		}
	}
	for _, args := range [][]string{{"completion", "tcsh"}, {"completion"}} {
		if code, _, stderr := shoal(t, args...); code != exitUsage || stderr == "" {
			t.Errorf("shoal %q: exit %d, stderr %q; want %d and why", args, code, stderr, exitUsage)
		}
	}
}

// Template names need no daemon; names the daemon holds are simply left
// out (never file names) when none runs, and quickly.
func TestCompleteWithoutDaemon(t *testing.T) {
	names, dir := complete(t, "deploy", "ref")
	if !slices.Equal(names, []string{"reference"}) || dir != ":4" {
		t.Errorf("complete deploy ref = %q %s; want [reference] :4 (no file names)", names, dir)
	}
	names, _ = complete(t, "deploy", "")
	if len(names) < 5 || !slices.Contains(names, "vllm") {
		t.Errorf("complete deploy '' = %q; want every built-in template", names)
	}
	if names, _ := complete(t, "deploy", "-f", "x.yaml", ""); len(names) != 0 {
		t.Errorf("complete deploy -f x.yaml '' = %q; want nothing (-f replaces the name)", names)
	}
	if names, _ := complete(t, "templates", "show", "vl"); !slices.Equal(names, []string{"vllm"}) {
		t.Errorf("complete templates show vl = %q; want [vllm]", names)
	}
	home := t.TempDir()
	t0 := time.Now()
	for _, args := range [][]string{{"logs", ""}, {"rm", ""}, {"weights", "pull", ""}, {"record", ""}} {
		if names, dir := complete(t, append([]string{"--home", home}, args...)...); len(names) != 0 || dir != ":4" {
			t.Errorf("complete %q with no daemon = %q %s; want nothing and :4", args, names, dir)
		}
	}
	if d := time.Since(t0); d > completeWait {
		t.Errorf("four completions with no daemon took %v; want well under %v", d, completeWait)
	}
}

// With a daemon running, deployment, model and member names come from it.
func TestCompleteFromDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real daemon process")
	}
	t.Setenv(envAsMain, "1")
	home := t.TempDir()
	defer node.NewClient(home).Leave(context.Background())
	args := append([]string{"--home", home, "up", "--detach", "--name", "completer", "--gpu", "RTX 3090:24GiB:10496"}, localFlags...)
	if code, stdout, stderr := shoal(t, args...); code != exitOK {
		t.Fatalf("shoal up --detach: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// A deployment no node can hold is recorded (failed) without starting
	// anything; its name is what completion needs.
	tmpl := filepath.Join(t.TempDir(), "huge.yaml")
	if err := os.WriteFile(tmpl, []byte(`apiVersion: shoal/v1
kind: Template
metadata:
  name: huge
  description: more GPUs than the pool has
spec:
  kind: job
  resources:
    gpus: 64
  runtime:
    command: [sleep, "3600"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := shoal(t, "--home", home, "deploy", "-f", tmpl, "--name", "huge-one"); code != exitOK {
		t.Fatalf("shoal deploy: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	model := filepath.Join(t.TempDir(), "weights.bin")
	if err := os.WriteFile(model, []byte("not really a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := shoal(t, "--home", home, "weights", "add", model, "--name", "tiny-model"); code != exitOK {
		t.Fatalf("shoal weights add: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, out, _ := shoal(t, "--home", home, "-o", "json", "status")
	var st node.Status
	if err := json.Unmarshal([]byte(out), &st); code != exitOK || err != nil {
		t.Fatalf("shoal status -o json = %d %q (%v)", code, out, err)
	}

	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"logs", ""}, []string{"huge-one"}},
		{[]string{"rm", "hu"}, []string{"huge-one"}},
		{[]string{"rm", "x"}, nil},
		{[]string{"scale", ""}, []string{"huge-one"}},
		{[]string{"scale", "huge-one", ""}, nil}, // the count is not a name
		{[]string{"weights", "pull", "t"}, []string{"tiny-model"}},
		{[]string{"weights", "rm", ""}, []string{"tiny-model"}},
		{[]string{"record", ""}, []string{st.PeerID}},
	} {
		names, dir := complete(t, append([]string{"--home", home}, tt.args...)...)
		if !slices.Equal(names, tt.want) || dir != ":4" {
			t.Errorf("complete %q = %q %s; want %q :4", tt.args, names, dir, tt.want)
		}
	}
	shoal(t, "--home", home, "rm", "huge-one")
	shoal(t, "--home", home, "leave")
}
