//go:build !cgo

package hardware

import (
	"errors"
	"strings"
	"testing"
)

func TestOpenNVMLWithoutCgo(t *testing.T) {
	n, err := OpenNVML()
	if n != nil || !errors.Is(err, ErrNoNVML) || !strings.Contains(err.Error(), "without cgo") {
		t.Errorf("OpenNVML() = %v, %v; want nil and an ErrNoNVML error saying the build has no cgo", n, err)
	}
}
