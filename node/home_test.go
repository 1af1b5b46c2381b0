package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolveHome(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		flag     string
		env      map[string]string
		userHome string
		want     string
	}{
		{"flag wins", "/flag/home", map[string]string{EnvHome: "/env", "XDG_DATA_HOME": "/xdg"}, "/u", "/flag/home"},
		{"env next", "", map[string]string{EnvHome: "/env", "XDG_DATA_HOME": "/xdg"}, "/u", "/env"},
		{"xdg next", "", map[string]string{"XDG_DATA_HOME": "/xdg"}, "/u", "/xdg/shoal"},
		{"user home last", "", nil, "/u", "/u/.local/share/shoal"},
		{"relative flag made absolute", "rel/home", nil, "/u", filepath.Join(cwd, "rel/home")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveHome(tt.flag, func(k string) string { return tt.env[k] },
				func() (string, error) { return tt.userHome, nil })
			if err != nil || got != tt.want {
				t.Errorf("resolveHome(%q) = %q, %v; want %q, nil", tt.flag, got, err, tt.want)
			}
		})
	}
}

func TestResolveHomeNoUserHome(t *testing.T) {
	_, err := resolveHome("", func(string) string { return "" }, func() (string, error) { return "", errors.New("no $HOME") })
	if err == nil {
		t.Fatal("resolveHome with no home anywhere = nil error; want one")
	}
}

func TestEnsureHomeMode(t *testing.T) {
	home := filepath.Join(t.TempDir(), "a", "home")
	if err := ensureHome(home); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ensureHome(home); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(home)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("home mode = %v; want 0700", got)
	}
}
