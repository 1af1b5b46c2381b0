package runtime_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoalmesh/shoal/runtime/runtimetest"
)

// Built once for the package: the static reference workload and a model.
var (
	referenceBin string
	modelDir     string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-runtime-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if referenceBin, err = runtimetest.BuildReference(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		modelDir = filepath.Join(dir, "model")
		if err := runtimetest.GenerateModel(referenceBin, modelDir, "tiny-reference", 1<<20); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Chmod(modelDir, 0o555) // as the weight cache hands it out
		defer os.Chmod(modelDir, 0o755)
		return m.Run()
	}()
	os.Exit(code)
}
