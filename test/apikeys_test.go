package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// apiKeys is the keys file of TestGatewayAPIKeys: two keys, a comment, a
// blank line and a trailing comment.
const apiKeys = `# keys of the lab pool
sk-lab-first

  sk-lab-second   # the ops team
`

// A node started with --api-keys-file: a file readable by everyone is
// refused before anything starts; with a private file, the gateway answers
// a chat request without a key or with a wrong one 401 in OpenAI's error
// format and with a key 200, and the dashboard's API and /metrics on the
// gateway listener likewise need a key. `shoal status` counts the keys and
// shows none, nor does the daemon's log.
func TestGatewayAPIKeys(t *testing.T) {
	ref := referenceBinary(t)
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte(apiKeys), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keys, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}

	// World-readable: refused, naming the file and the fix, not a key.
	home := NewHome(t)
	args := append([]string{"--home", home, "up", "--detach", "--gpu", "RTX 4090:24GiB:16384", "--api-keys-file", keys}, Loopback...)
	_, stderr, err := Run(t, args...)
	if err == nil {
		Run(t, "--home", home, "leave")
		t.Fatal("up with a world-readable API keys file started; want it refused")
	}
	if !strings.Contains(stderr, "readable by everyone") || !strings.Contains(stderr, keys) || strings.Contains(stderr, "sk-lab") {
		t.Errorf("up with a world-readable keys file: stderr %q; want the file named, the reason, and no key", stderr)
	}
	if _, err := os.Stat(filepath.Join(home, "control.sock")); err == nil {
		t.Errorf("a refused up left a control socket in %s", home)
	}

	if err := os.Chmod(keys, 0o600); err != nil {
		t.Fatal(err)
	}
	a := Up(t, home, "--gpu", "RTX 4090:24GiB:16384", "--runtime", "process", "--api-keys-file", keys)
	var st struct {
		Gateway string `json:"gateway"`
		APIKeys int    `json:"api_keys"`
	}
	a.JSON(&st, "status")
	if st.APIKeys != 2 {
		t.Errorf("status -o json: api_keys %d; want 2", st.APIKeys)
	}
	out, _, err := Run(t, "--home", a.Home, "status")
	if err != nil || !strings.Contains(out, "API KEYS") || strings.Contains(out, "sk-lab") {
		t.Errorf("status = %q, %v; want the key count and no key", out, err)
	}
	base := "http://" + st.Gateway

	_, imp := referenceModel(t, ref, "tiny")
	a.Shoal("weights", "add", imp, "--name", "tiny")
	deployTemplate(t, a, refTemplate("", 0, "10m"), "ref", "tiny")

	for _, tc := range []struct {
		name, key string
		want      int
	}{
		{"no key", "", http.StatusUnauthorized},
		{"a wrong key", "sk-lab-third", http.StatusUnauthorized},
		{"a key's prefix", "sk-lab-sec", http.StatusUnauthorized},
		{"the comment", "the ops team", http.StatusUnauthorized},
		{"the second key", "sk-lab-second", http.StatusOK}, // a cold start: the replica starts now
		{"the first key", "sk-lab-first", http.StatusOK},
	} {
		code, body := keyedRequest(t, http.MethodPost, base+"/v1/chat/completions", tc.key, chatBody)
		if code != tc.want {
			t.Errorf("chat with %s = %d %s; want %d", tc.name, code, body, tc.want)
			continue
		}
		if code == http.StatusUnauthorized {
			var e struct {
				Error *struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Code != "invalid_api_key" || e.Error.Message == "" {
				t.Errorf("chat with %s: body %s; want an OpenAI error with code invalid_api_key", tc.name, body)
			}
		}
	}
	if t.Failed() {
		return
	}

	for _, path := range []string{"/api/dashboard/summary", "/metrics", "/v1/models"} {
		if code, body := keyedRequest(t, http.MethodGet, base+path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a key = %d %.200s; want 401", path, code, body)
		}
		if code, body := keyedRequest(t, http.MethodGet, base+path, "sk-lab-wrong", ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong key = %d %.200s; want 401", path, code, body)
		}
		if code, body := keyedRequest(t, http.MethodGet, base+path, "sk-lab-first", ""); code != http.StatusOK {
			t.Errorf("GET %s with a key = %d %.200s; want 200", path, code, body)
		}
	}

	// The keys appear in no log.
	b, err := os.ReadFile(filepath.Join(a.Home, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "sk-lab") {
		t.Errorf("daemon.log contains an API key")
	}
}

// keyedRequest sends one request with "Authorization: Bearer key" (none
// when key is empty) and returns the status and the body.
func keyedRequest(t *testing.T, method, url, key, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
