package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func genModel(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	if err := Generate(dir, GenerateOptions{Name: name, WeightsBytes: 4096, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, b := genModel(t, "m"), genModel(t, "m")
	for _, f := range []string{"config.json", "vocab.txt", "weights.bin", ManifestPath} {
		x, err := os.ReadFile(filepath.Join(a, f))
		if err != nil {
			t.Fatal(err)
		}
		y, _ := os.ReadFile(filepath.Join(b, f))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two generations with the same options", f)
		}
	}
}

func TestLoadModelRefusesWhatDoesNotMatch(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		want   error
	}{
		{"ok", func(*testing.T, string) {}, nil},
		{"tampered weights", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "weights.bin"))
			b[10] ^= 1
			writeFile(t, filepath.Join(dir, "weights.bin"), b)
		}, ErrMismatch},
		{"truncated vocab", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "vocab.txt"))
			writeFile(t, filepath.Join(dir, "vocab.txt"), b[:len(b)-3])
		}, ErrMismatch},
		{"missing file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "weights.bin"))
		}, ErrMismatch},
		{"no manifest", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ManifestPath))
		}, ErrManifest},
		{"weights not listed", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				files := m["files"].([]any)
				m["files"] = files[:2] // config.json, vocab.txt
			})
		}, ErrManifest},
		{"path escapes", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				m["files"].([]any)[0].(map[string]any)["path"] = "../config.json"
			})
		}, ErrManifest},
		{"uppercase hash", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				f := m["files"].([]any)[0].(map[string]any)
				f["sha256"] = strings.ToUpper(f["sha256"].(string))
			})
		}, ErrManifest},
		{"extra manifest fields are ignored", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				m["chunks"] = []any{1, 2}
				m["files"].([]any)[0].(map[string]any)["mode"] = 420
			})
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := genModel(t, "m")
			tt.change(t, dir)
			_, err := LoadModel(dir)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("LoadModel = %v; want %v", err, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func editManifest(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	name := filepath.Join(dir, ManifestPath)
	raw, _ := os.ReadFile(name)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, _ = json.Marshal(m)
	writeFile(t, name, raw)
}

func newTestServer(t *testing.T, served string) *httptest.Server {
	t.Helper()
	m, err := LoadModel(genModel(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	if served == "" {
		served = m.Name
	}
	ts := httptest.NewServer(newServer(m, served, 0))
	t.Cleanup(ts.Close)
	return ts
}

func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestModelsReportsServedName(t *testing.T) {
	ts := newTestServer(t, "my-deployment")
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Object != "list" || len(got.Data) != 1 || got.Data[0].ID != "my-deployment" {
		t.Fatalf("/v1/models = %+v; want one model with id my-deployment", got)
	}
}

type completion struct {
	Model   string `json:"model"`
	Choices []struct {
		Message      chatMessage `json:"message"`
		FinishReason string      `json:"finish_reason"`
	} `json:"choices"`
	Usage usage `json:"usage"`
}

func TestChatIsDeterministicAndStreamsTheSame(t *testing.T) {
	ts := newTestServer(t, "")
	body := `{"model":"tiny","messages":[{"role":"user","content":"hello there"}],"max_tokens":8}`
	var answers []string
	for range 2 {
		resp, b := post(t, ts.URL+"/v1/chat/completions", body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		var c completion
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || len(strings.Fields(c.Choices[0].Message.Content)) != 8 || c.Usage.CompletionTokens != 8 {
			t.Fatalf("completion = %s; want 8 words", b)
		}
		answers = append(answers, c.Choices[0].Message.Content)
	}
	if answers[0] != answers[1] {
		t.Fatalf("two answers to one prompt differ: %q, %q", answers[0], answers[1])
	}
	_, other := post(t, ts.URL+"/v1/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"bye"}],"max_tokens":8}`)
	if bytes.Contains(other, []byte(answers[0])) {
		t.Errorf("another prompt gave the same answer %q", answers[0])
	}

	// Streaming: the concatenated deltas equal the non-streaming answer.
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(strings.Replace(body, `"max_tokens":8`, `"max_tokens":8,"stream":true`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q; want text/event-stream", ct)
	}
	var text strings.Builder
	var done bool
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var chunk struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			t.Fatalf("chunk %q: %v", line, err)
		}
		if chunk.Object != "chat.completion.chunk" {
			t.Fatalf("chunk object = %q", chunk.Object)
		}
		text.WriteString(chunk.Choices[0].Delta.Content)
	}
	if !done {
		t.Fatal("stream ended without data: [DONE]")
	}
	if text.String() != answers[0] {
		t.Fatalf("streamed %q; want %q", text.String(), answers[0])
	}
}

func TestChatErrorsInOpenAIFormat(t *testing.T) {
	ts := newTestServer(t, "")
	tests := []struct {
		body   string
		status int
		code   string
	}{
		{`{"model":"other","messages":[{"role":"user","content":"x"}]}`, 404, "model_not_found"},
		{`{"model":"tiny","messages":[]}`, 400, "invalid_value"},
		{`{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_tokens":0}`, 400, "invalid_value"},
		{`{not json`, 400, "invalid_json"},
	}
	for _, tt := range tests {
		resp, b := post(t, ts.URL+"/v1/chat/completions", tt.body)
		var e struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
				Code    string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s: body %s: %v", tt.body, b, err)
		}
		if resp.StatusCode != tt.status || e.Error.Code != tt.code || e.Error.Message == "" || e.Error.Type == "" {
			t.Errorf("POST %s = %d %s; want %d with code %s", tt.body, resp.StatusCode, b, tt.status, tt.code)
		}
	}
}

func TestRunRefusesBadModelAndOversizedWeights(t *testing.T) {
	dir := genModel(t, "tiny")
	var out, errb bytes.Buffer
	// 4096-byte weights fit no limit below 1 MiB; use a bigger model.
	big := filepath.Join(t.TempDir(), "big")
	if err := Generate(big, GenerateOptions{Name: "big", WeightsBytes: 3 << 20, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"--model-dir", big, "--vram-limit-mib", "2", "--listen", "127.0.0.1:0"}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "VRAM limit is 2 MiB") {
		t.Fatalf("oversized weights: exit %d, stderr %q; want exit 1 naming the limit", code, errb.String())
	}
	os.Remove(filepath.Join(dir, "vocab.txt"))
	errb.Reset()
	if code := run([]string{"--model-dir", dir, "--listen", "127.0.0.1:0"}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "vocab.txt") {
		t.Fatalf("missing file: exit %d, stderr %q; want exit 1 naming vocab.txt", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"--listen", "127.0.0.1:0"}, &out, &errb); code != 2 {
		t.Fatalf("no model dir: exit %d; want 2", code)
	}
}

func FuzzLoadModelManifest(f *testing.F) {
	dir := genModel(f, "tiny")
	good, err := os.ReadFile(filepath.Join(dir, ManifestPath))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"files":[{"path":"../../etc/passwd","size":1,"sha256":"00"}]}`))
	f.Add([]byte(`{"files":null}`))
	f.Fuzz(func(t *testing.T, manifest []byte) {
		d := t.TempDir()
		for _, name := range []string{"config.json", "vocab.txt", "weights.bin"} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			writeFile(t, filepath.Join(d, name), b)
		}
		os.MkdirAll(filepath.Join(d, ".shoal"), 0o755)
		writeFile(t, filepath.Join(d, ManifestPath), manifest)
		m, err := LoadModel(d)
		if err == nil && (m.Name != "tiny" || len(m.Vocab) == 0) {
			t.Fatalf("LoadModel accepted a manifest and loaded %+v", m)
		}
	})
}
