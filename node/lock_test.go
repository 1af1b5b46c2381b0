package node

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestLockHomeExcludesSecondHolder(t *testing.T) {
	home := t.TempDir()
	l, err := lockHome(home)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockHome(home)
	if !errors.Is(err, ErrHomeLocked) {
		t.Fatalf("second lockHome = %v; want ErrHomeLocked", err)
	}
	for _, want := range []string{"pid " + strconv.Itoa(os.Getpid()), home} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("lock error %q does not name %q", err, want)
		}
	}
	if err := CheckHomeFree(home); !errors.Is(err, ErrHomeLocked) {
		t.Errorf("CheckHomeFree while locked = %v; want ErrHomeLocked", err)
	}
	if err := l.release(); err != nil {
		t.Fatal(err)
	}
	if err := CheckHomeFree(home); err != nil {
		t.Errorf("CheckHomeFree after release = %v; want nil", err)
	}
	l2, err := lockHome(home)
	if err != nil {
		t.Fatalf("lockHome after release = %v; want nil", err)
	}
	l2.release()
}

func TestCheckHomeFreeMissingHome(t *testing.T) {
	if err := CheckHomeFree(t.TempDir() + "/nope"); err != nil {
		t.Errorf("CheckHomeFree(missing) = %v; want nil", err)
	}
}

// A daemon killed with SIGKILL cannot clean up; the kernel drops its flock,
// so the home is usable at once.
func TestLockReleasedOnSIGKILL(t *testing.T) {
	home := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"=lock", EnvHome+"="+home)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v; want \"locked\"", line, err)
	}

	_, err = lockHome(home)
	if !errors.Is(err, ErrHomeLocked) {
		t.Fatalf("lockHome while helper holds it = %v; want ErrHomeLocked", err)
	}
	if want := "pid " + strconv.Itoa(cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("lock error %q does not name the helper (%s)", err, want)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() // reaped: its descriptors, and so its lock, are gone
	l, err := lockHome(home)
	if err != nil {
		t.Fatalf("lockHome after SIGKILL of holder = %v; want nil", err)
	}
	l.release()
}
