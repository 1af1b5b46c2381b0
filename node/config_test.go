package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/hardware"
)

func TestConfigValidateDefaults(t *testing.T) {
	c := Config{Home: t.TempDir()}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		field string
		got   any
		want  any
	}{
		{"InventoryInterval", c.InventoryInterval, DefaultInventoryInterval},
		{"JoinTimeout", c.JoinTimeout, DefaultJoinTimeout},
		{"PeersSaveInterval", c.PeersSaveInterval, DefaultPeersSaveInterval},
		{"LeaveTimeout", c.LeaveTimeout, DefaultLeaveTimeout},
		{"Version", c.Version, DefaultVersion},
		{"len(ListenAddrs)", len(c.ListenAddrs), 2},
		{"ListenAddrs[0]", c.ListenAddrs[0].String(), "/ip4/0.0.0.0/udp/4242/quic-v1"},
		{"ListenAddrs[1]", c.ListenAddrs[1].String(), "/ip4/0.0.0.0/tcp/4242"},
		{"Name set", c.Name != "", true},
		{"Logger set", c.Logger != nil, true},
		{"Clock set", c.Clock != nil, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("validate: %s = %v; want %v", ch.field, ch.got, ch.want)
		}
	}
	d := DefaultConfig()
	if !d.MDNS || !d.NATPortMap {
		t.Errorf("DefaultConfig MDNS, NATPortMap = %v, %v; want true, true", d.MDNS, d.NATPortMap)
	}
}

func TestConfigValidateRejects(t *testing.T) {
	p := testPool(1)
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"tiny inventory interval", func(c *Config) { c.InventoryInterval = time.Nanosecond }},
		{"negative join timeout", func(c *Config) { c.JoinTimeout = -time.Second }},
		{"tiny peers save interval", func(c *Config) { c.PeersSaveInterval = time.Millisecond }},
		{"negative leave timeout", func(c *Config) { c.LeaveTimeout = -1 }},
		{"empty listen addr", func(c *Config) { c.ListenAddrs = []multiaddr.Multiaddr{nil} }},
		{"long name", func(c *Config) { c.Name = string(make([]byte, 64)) }},
		{"control char in name", func(c *Config) { c.Name = "a\nb" }},
		{"GPU without name", func(c *Config) { c.GPUs = []hardware.GPU{{VRAMTotalBytes: 1}} }},
		{"GPU without VRAM", func(c *Config) { c.GPUs = []hardware.GPU{{Name: "x"}} }},
		{"GPU free over total", func(c *Config) { c.GPUs = []hardware.GPU{{Name: "x", VRAMTotalBytes: 1, VRAMFreeBytes: 2}} }},
		{"force without join", func(c *Config) { c.Force = true }},
		{"force with join is fine", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Home = t.TempDir()
			if tt.mod == nil {
				c.Force, c.Join = true, &p
				if err := c.validate(); err != nil {
					t.Errorf("validate = %v; want nil", err)
				}
				return
			}
			tt.mod(&c)
			if err := c.validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("validate = %v; want ErrInvalidConfig", err)
			}
		})
	}
}

func TestNewRefusesOtherPool(t *testing.T) {
	home := t.TempDir()
	if err := savePool(home, testPool(1)); err != nil {
		t.Fatal(err)
	}
	other := testPool(2)
	cfg := DefaultConfig()
	cfg.Home, cfg.Join = home, &other
	if _, err := New(cfg); !errors.Is(err, ErrOtherPool) {
		t.Errorf("New(join other pool) = %v; want ErrOtherPool", err)
	}
	cfg.Force = true
	if _, err := New(cfg); err != nil {
		t.Errorf("New(join other pool, force) = %v; want nil", err)
	}
}

// An API keys file: keys one per line with comments and blanks; refused
// when everyone may read it, when it names no key or a key that cannot be
// sent in a header, and the errors never quote a key.
func TestLoadAPIKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "# pool keys\nsk-1\n\n  sk-2 # ops\nsk-1\n", 0o640)
	keys, err := LoadAPIKeys(good)
	if err != nil || strings.Join(keys, ",") != "sk-1,sk-2" {
		t.Fatalf("LoadAPIKeys(good) = %q, %v; want [sk-1 sk-2]", keys, err)
	}
	for _, tc := range []struct {
		name, text string
		mode       os.FileMode
		want       string
	}{
		{"world", "sk-secret\n", 0o644, "readable by everyone"},
		{"empty", "# nothing yet\n\n", 0o600, "names no key"},
		{"blank", "sk-se cret\n", 0o600, "line 1"},
		{"control", "ok\nsk-se\x01cret\n", 0o600, "line 2"},
	} {
		_, err := LoadAPIKeys(write(tc.name, tc.text, tc.mode))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "cret") {
			t.Errorf("LoadAPIKeys(%s) = %v; want an error saying %q without the key", tc.name, err, tc.want)
		}
	}
	if _, err := LoadAPIKeys(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadAPIKeys(missing) = %v; want os.ErrNotExist", err)
	}

	c := Config{Home: t.TempDir(), APIKeysFile: good}
	if err := c.validate(); err != nil || len(c.APIKeys) != 2 {
		t.Fatalf("validate with a keys file: %v, %d keys; want 2", err, len(c.APIKeys))
	}
	c = Config{Home: t.TempDir(), APIKeysFile: filepath.Join(dir, "world")}
	if err := c.validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("validate with a world-readable keys file = %v; want ErrInvalidConfig", err)
	}
	c = Config{Home: t.TempDir(), APIKeys: []string{"sk 1"}}
	if err := c.validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("validate with a key holding a blank = %v; want ErrInvalidConfig", err)
	}
}
