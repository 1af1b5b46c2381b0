package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTemplatesList(t *testing.T) {
	code, stdout, stderr := shoal(t, "templates")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"NAME", "reference", "vllm", "llama-cpp-split", "gang", "model*"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("shoal templates output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = shoal(t, "templates", "-o", "json")
	var rows []templateSummary
	if code != exitOK || json.Unmarshal([]byte(stdout), &rows) != nil || len(rows) < 10 {
		t.Fatalf("templates -o json: exit %d, %d rows:\n%s", code, len(rows), stdout)
	}
}

func TestTemplatesShow(t *testing.T) {
	code, stdout, stderr := shoal(t, "templates", "show", "reference")
	if code != exitOK || !strings.Contains(stdout, "apiVersion: shoal/v1") || !strings.Contains(stdout, "name: reference") {
		t.Fatalf("show reference: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = shoal(t, "templates", "show", "vlm")
	if code != exitUsage || !strings.Contains(stderr, "unknown template") || !strings.Contains(stderr, "vllm") {
		t.Fatalf("show vlm: exit %d, stderr %q; want usage error listing the templates", code, stderr)
	}
	if code, _, _ = shoal(t, "templates", "show"); code != exitUsage {
		t.Fatalf("show without a name: exit %d; want %d", code, exitUsage)
	}
}
