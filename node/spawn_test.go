package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func spawnConfig(home, helper string) SpawnConfig {
	return SpawnConfig{
		Home: home,
		Path: os.Args[0],
		Args: []string{"-test.run=^$"},
		Env:  append(os.Environ(), envHelper+"="+helper, EnvHome+"="+home),
	}
}

func TestSpawnReadyThenLeave(t *testing.T) {
	home := t.TempDir()
	ctx := context.Background()
	st, err := Spawn(ctx, spawnConfig(home, "daemon"))
	if err != nil {
		t.Fatalf("Spawn = %v", err)
	}
	if !st.Ready || st.PID == os.Getpid() || st.Home != home {
		t.Errorf("Spawn status = %+v; want ready, another pid, home %s", st, home)
	}
	if _, err := Spawn(ctx, spawnConfig(home, "daemon")); !errors.Is(err, ErrHomeLocked) {
		t.Errorf("second Spawn on a running home = %v; want ErrHomeLocked", err)
	}
	if _, err := NewClient(home).Leave(ctx); err != nil {
		t.Fatalf("Leave = %v", err)
	}
	if err := CheckHomeFree(home); err != nil {
		t.Errorf("home after Leave = %v; want free", err)
	}
	log, _ := os.ReadFile(filepath.Join(home, LogFile))
	if !strings.Contains(string(log), "leave requested") {
		t.Errorf("daemon.log lacks the daemon's own log:\n%s", log)
	}
}

func TestSpawnChildExits(t *testing.T) {
	home := t.TempDir()
	_, err := Spawn(context.Background(), spawnConfig(home, "fail"))
	var se *StartError
	if !errors.As(err, &se) || !errors.Is(err, ErrDaemonExited) {
		t.Fatalf("Spawn(failing child) = %v; want StartError ErrDaemonExited", err)
	}
	if se.ExitCode != 3 || len(se.LogTail) != DefaultLogTailLines || se.LogTail[len(se.LogTail)-1] != "helper line 30" {
		t.Errorf("StartError = exit %d, tail %q; want exit 3, 20 lines ending with helper line 30", se.ExitCode, se.LogTail)
	}
	if !strings.Contains(err.Error(), filepath.Join(home, LogFile)) {
		t.Errorf("StartError %q does not name the log file", err)
	}
}
