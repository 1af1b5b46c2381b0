package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// homeLock is the flock(2) a running daemon holds on HOME/lock. The kernel
// drops it when the process dies, however it dies, so a killed daemon leaves
// its home usable.
type homeLock struct {
	f *os.File
}

// lockHome takes the home's lock without waiting and writes this process's
// PID into the lock file. A held lock gives an error matching ErrHomeLocked
// that names the holder's PID and the home.
func lockHome(home string) (*homeLock, error) {
	f, err := os.OpenFile(filepath.Join(home, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := readPID(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, lockedError(home, pid)
		}
		return nil, fmt.Errorf("node: lock %s: %w", home, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close() // closing drops the lock
		return nil, fmt.Errorf("node: write lock file: %w", err)
	}
	return &homeLock{f: f}, nil
}

// release clears the PID and drops the lock.
func (l *homeLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing the only descriptor drops the flock
	l.f = nil
	return err
}

// CheckHomeFree returns nil when no daemon holds home's lock (a home that
// does not exist yet is free), else an error matching ErrHomeLocked that
// names the daemon's PID.
func CheckHomeFree(home string) error {
	f, err := os.OpenFile(filepath.Join(home, LockFile), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("node: open lock file: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return lockedError(home, readPID(f))
		}
		return fmt.Errorf("node: lock %s: %w", home, err)
	}
	return nil // Close above drops the lock we just took
}

func lockedError(home string, pid int) error {
	who := "a process"
	if pid > 0 {
		who = "pid " + strconv.Itoa(pid)
	}
	return fmt.Errorf("%w: %s holds %s; stop it with `shoal leave --home %s` or pass another --home",
		ErrHomeLocked, who, home, home)
}

func readPID(f *os.File) int {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 64))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}
