package runtime_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/shoalmesh/shoal/runtime/runtimetest"
)

// Built once for the package: the static reference workload and a model.
var (
	referenceBin string
	modelDir     string
)

func TestMain(m *testing.M) {
	f, err := runtimetest.NewFixture("shoal-runtime-test-", "tiny-reference", 1<<20)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	referenceBin, modelDir = f.Bin, f.Model
	os.Chmod(modelDir, 0o555) // as the weight cache hands it out
	code := m.Run()
	removeReferenceImage()
	f.Close()
	os.Exit(code)
}
