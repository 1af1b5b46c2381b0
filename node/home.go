package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Names of the files in a home directory.
const (
	IdentityFile = "identity.key"
	PoolFile     = "pool.json"
	PeersFile    = "peers.json"
	LockFile     = "lock"
	SocketFile   = "control.sock"
	LogFile      = "daemon.log"
)

// EnvHome names the environment variable that chooses the home directory when
// no --home flag is given.
const EnvHome = "SHOAL_HOME"

// ResolveHome returns the absolute home directory: flag if set, else
// $SHOAL_HOME, else $XDG_DATA_HOME/shoal, else ~/.local/share/shoal. It does
// not create the directory.
func ResolveHome(flag string) (string, error) {
	return resolveHome(flag, os.Getenv, os.UserHomeDir)
}

func resolveHome(flag string, getenv func(string) string, userHome func() (string, error)) (string, error) {
	dir := flag
	if dir == "" {
		dir = getenv(EnvHome)
	}
	if dir == "" {
		if x := getenv("XDG_DATA_HOME"); x != "" {
			dir = filepath.Join(x, "shoal")
		}
	}
	if dir == "" {
		h, err := userHome()
		if err == nil && h == "" {
			err = errors.New("no user home directory")
		}
		if err != nil {
			return "", fmt.Errorf("node: cannot choose a home directory; pass --home or set $%s: %w", EnvHome, err)
		}
		dir = filepath.Join(h, ".local", "share", "shoal")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("node: home %q: %w", dir, err)
	}
	return abs, nil
}

// ensureHome creates home (and its parents) with mode 0700, and narrows the
// mode of an existing home to 0700.
func ensureHome(home string) error {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("node: create home %s: %w", home, err)
	}
	fi, err := os.Stat(home)
	if err != nil {
		return fmt.Errorf("node: home %s: %w", home, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("node: home %s is not a directory", home)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(home, 0o700); err != nil {
			return fmt.Errorf("node: chmod home %s: %w", home, err)
		}
	}
	return nil
}

// WriteFileAtomic writes data to path with mode perm through a temporary file
// in the same directory and a rename, so readers never see half a file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
