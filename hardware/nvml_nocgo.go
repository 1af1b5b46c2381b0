//go:build !cgo

package hardware

import "errors"

// NVML is an open session with the NVIDIA driver's management library. This
// binary was built without cgo, so no session can be opened.
type NVML struct{}

// OpenNVML always fails in a build without cgo: go-nvml loads libnvidia-ml
// through cgo. The error matches ErrNoNVML.
func OpenNVML() (*NVML, error) {
	return nil, &noNVMLError{reason: "this binary was built without cgo (CGO_ENABLED=0)"}
}

// GPUs returns no GPUs; there is no NVML session without cgo.
func (n *NVML) GPUs() ([]GPU, error) {
	return nil, errors.New("hardware: NVML is not built into this binary")
}

// Versions returns empty versions.
func (n *NVML) Versions() (driver, cuda string) { return "", "" }

// Close does nothing.
func (n *NVML) Close() error { return nil }
