package node

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// loadOrCreateIdentity reads HOME/identity.key, creating a new ed25519 key
// there (0600) when there is none. created says whether it made one.
func loadOrCreateIdentity(home string) (key crypto.PrivKey, created bool, err error) {
	path := filepath.Join(home, IdentityFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: run `shoal reset-identity --home %s` to make a new one: %w",
				ErrBadIdentity, path, home, err)
		}
		return key, false, nil
	case errors.Is(err, os.ErrNotExist):
		key, err := writeNewIdentity(home)
		return key, err == nil, err
	default:
		return nil, false, fmt.Errorf("node: read identity: %w", err)
	}
}

func writeNewIdentity(home string) (crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("node: generate identity: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("node: marshal identity: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(home, IdentityFile), b, 0o600); err != nil {
		return nil, fmt.Errorf("node: write identity: %w", err)
	}
	return key, nil
}

// ResetIdentity gives the node in home a new key (a new peer ID) and returns
// the new ID. Pool membership (pool.json) is kept; peers.json is kept too,
// since those addresses are still the pool's. It refuses with an error
// matching ErrHomeLocked while a daemon runs on home.
//
// Use it when two machines share an identity because a home was copied.
func ResetIdentity(home string) (peer.ID, error) {
	if err := ensureHome(home); err != nil {
		return "", err
	}
	lock, err := lockHome(home)
	if err != nil {
		return "", err
	}
	defer lock.release()
	key, err := writeNewIdentity(home)
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("node: peer ID of new identity: %w", err)
	}
	return id, nil
}

// machineIDFiles are read in order for a stable per-machine ID.
var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

// Fingerprint identifies this machine and this home path: sha256 over the
// machine ID (/etc/machine-id, falling back to the hostname) and the absolute
// home path. A home copied to another machine, or moved to another path,
// gets another fingerprint, which lets the mesh tell two daemons that share a
// key apart (mesh.Config.Fingerprint).
func Fingerprint(home string) ([]byte, error) {
	abs, err := filepath.Abs(home)
	if err != nil {
		return nil, fmt.Errorf("node: fingerprint: %w", err)
	}
	return fingerprint(machineID(), abs), nil
}

func machineID() string {
	for _, p := range machineIDFiles {
		if b, err := os.ReadFile(p); err == nil {
			if s := strings.TrimSpace(string(b)); s != "" {
				return "machine-id:" + s
			}
		}
	}
	h, _ := os.Hostname()
	return "hostname:" + h
}

func fingerprint(machine, absHome string) []byte {
	h := sha256.New()
	h.Write([]byte("shoal-fingerprint-v1\x00"))
	h.Write([]byte(machine))
	h.Write([]byte{0})
	h.Write([]byte(absHome))
	return h.Sum(nil)
}
