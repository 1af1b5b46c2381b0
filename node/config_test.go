package node

import (
	"errors"
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
