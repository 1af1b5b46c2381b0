package node

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestIdentityCreatedOnceThenLoaded(t *testing.T) {
	home := t.TempDir()
	k1, created, err := loadOrCreateIdentity(home)
	if err != nil || !created {
		t.Fatalf("first loadOrCreateIdentity = created %v, %v; want true, nil", created, err)
	}
	fi, err := os.Stat(filepath.Join(home, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("identity.key mode = %v; want 0600", got)
	}
	k2, created, err := loadOrCreateIdentity(home)
	if err != nil || created {
		t.Fatalf("second loadOrCreateIdentity = created %v, %v; want false, nil", created, err)
	}
	if !k1.Equals(k2) {
		t.Error("reloaded key differs from the created one")
	}
}

func TestIdentityUnreadable(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, IdentityFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := loadOrCreateIdentity(home)
	if !errors.Is(err, ErrBadIdentity) {
		t.Errorf("loadOrCreateIdentity(garbage) = %v; want ErrBadIdentity", err)
	}
}

func TestResetIdentity(t *testing.T) {
	home := t.TempDir()
	k1, _, err := loadOrCreateIdentity(home)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := peer.IDFromPrivateKey(k1)
	if err := savePool(home, testPool(7)); err != nil {
		t.Fatal(err)
	}
	poolBefore, _ := os.ReadFile(filepath.Join(home, PoolFile))

	// Refused while a daemon holds the home.
	l, err := lockHome(home)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ResetIdentity(home); !errors.Is(err, ErrHomeLocked) {
		t.Errorf("ResetIdentity while locked = %v; want ErrHomeLocked", err)
	}
	l.release()

	id, err := ResetIdentity(home)
	if err != nil {
		t.Fatal(err)
	}
	if id == old {
		t.Errorf("ResetIdentity kept peer ID %s", id)
	}
	k2, created, err := loadOrCreateIdentity(home)
	if err != nil || created {
		t.Fatalf("load after reset = created %v, %v", created, err)
	}
	if got, _ := peer.IDFromPrivateKey(k2); got != id {
		t.Errorf("key on disk is %s; ResetIdentity returned %s", got, id)
	}
	poolAfter, _ := os.ReadFile(filepath.Join(home, PoolFile))
	if !bytes.Equal(poolBefore, poolAfter) {
		t.Error("ResetIdentity changed pool.json")
	}
}

func TestFingerprint(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	fa, err := Fingerprint(a)
	if err != nil {
		t.Fatal(err)
	}
	fa2, _ := Fingerprint(a)
	fb, _ := Fingerprint(b)
	if !bytes.Equal(fa, fa2) {
		t.Error("Fingerprint of one home differs between calls")
	}
	if bytes.Equal(fa, fb) {
		t.Errorf("Fingerprint(%s) == Fingerprint(%s); want different paths to differ", a, b)
	}
	if bytes.Equal(fingerprint("machine-id:one", "/h"), fingerprint("machine-id:two", "/h")) {
		t.Error("fingerprint of one path on two machines is equal; want different")
	}
	if len(fa) != 32 {
		t.Errorf("len(Fingerprint) = %d; want 32", len(fa))
	}
}
