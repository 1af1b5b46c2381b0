// Package runtimetest helps tests run the reference workload: build the
// static shoal-reference binary, generate a reference model directory and
// build a FROM scratch Docker image of it. It needs the go tool and, for the
// image, a reachable Docker engine; no registry or network.
package runtimetest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/moby/moby/client"
)

// BuildReference builds cmd/shoal-reference statically (CGO_ENABLED=0) into
// dir and returns the binary's path.
func BuildReference(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "shoal-reference")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/shoal-reference")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("runtimetest: build shoal-reference: %w\n%s", err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("runtimetest: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("runtimetest: not inside the module")
	}
	return filepath.Dir(mod), nil
}

// GenerateModel writes a reference model named name to dir with bin
// (`shoal-reference --generate`), weights of size bytes.
func GenerateModel(bin, dir, name string, size int64) error {
	out, err := exec.Command(bin, "--generate", dir, "--name", name, "--size", fmt.Sprint(size)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runtimetest: generate model: %w\n%s", err, out)
	}
	return nil
}

// Fixture is a reference workload binary and a generated model in a
// directory of their own, for a package's TestMain.
type Fixture struct {
	Dir   string // holds both; Close removes it
	Bin   string // the static shoal-reference
	Model string // the model directory, Dir/model
}

// NewFixture builds the reference workload and generates a model named
// name with weights of size bytes, in a new temporary directory whose name
// starts with prefix.
func NewFixture(prefix, name string, size int64) (*Fixture, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	f := &Fixture{Dir: dir, Model: filepath.Join(dir, "model")}
	if f.Bin, err = BuildReference(dir); err == nil {
		err = GenerateModel(f.Bin, f.Model, name, size)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Close removes the fixture's directory (restoring write permission on the
// model directory first, should a test have made it read-only).
func (f *Fixture) Close() {
	_ = os.Chmod(f.Model, 0o755)
	_ = os.RemoveAll(f.Dir)
}

// dockerfile of the reference image: the static binary alone.
const dockerfile = `FROM scratch
COPY shoal-reference /shoal-reference
EXPOSE 8000
ENTRYPOINT ["/shoal-reference"]
`

// BuildReferenceImage builds a FROM scratch image holding bin and tags it
// tag (e.g. shoal-reference:test) through the engine's build API.
func BuildReferenceImage(ctx context.Context, c *client.Client, bin, tag string) error {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, []byte(dockerfile)}, {"shoal-reference", 0o755, exe}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := c.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("runtimetest: build image: %w", err)
	}
	defer res.Body.Close()
	// The build reports failures in its JSON stream, not as an HTTP error.
	dec := json.NewDecoder(res.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("runtimetest: build image: %w", err)
		}
		if msg.Error != "" {
			return fmt.Errorf("runtimetest: build image: %s", msg.Error)
		}
	}
}
