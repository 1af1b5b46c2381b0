package hardware

import (
	"errors"
	"fmt"
)

var (
	// ErrNoNVML means the NVIDIA management library cannot be used on this
	// machine: the binary was built without cgo, the driver library is not
	// installed, the kernel driver is not loaded, or the driver sees no GPU.
	// The node then runs on with declared GPUs or none.
	ErrNoNVML = errors.New("hardware: NVML not available")

	// ErrBadGPUSpec means a declared GPU (flag or file entry) could not be
	// understood.
	ErrBadGPUSpec = errors.New("hardware: bad GPU spec")

	// ErrBadGPUFile means a GPU declaration file could not be read or does
	// not have the expected shape.
	ErrBadGPUFile = errors.New("hardware: bad GPU file")

	// ErrGPUsDeclared is what Prober.NVMLStatus reports when the operator
	// declared the GPUs, so NVML was not consulted at all.
	ErrGPUsDeclared = errors.New("hardware: NVML not consulted: GPUs are declared")
)

// noNVMLError says why NVML cannot be used. It matches ErrNoNVML and, when
// there is one, the underlying cause (an nvml.Return in cgo builds).
type noNVMLError struct {
	reason string
	cause  error
}

func (e *noNVMLError) Error() string {
	return "hardware: NVML not available: " + e.reason
}

func (e *noNVMLError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrNoNVML}
	}
	return []error{ErrNoNVML, e.cause}
}

// SpecError is a declared GPU flag value that could not be parsed. It
// matches ErrBadGPUSpec.
type SpecError struct {
	Spec    string // the input as given
	Problem string // what is wrong and what was expected
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("hardware: bad GPU spec %q: %s", e.Spec, e.Problem)
}

// Unwrap lets errors.Is(err, ErrBadGPUSpec) hold.
func (e *SpecError) Unwrap() error { return ErrBadGPUSpec }

// FileError is a problem at one place in a GPU declaration file. It matches
// ErrBadGPUFile and, for a value that is wrong, ErrBadGPUSpec.
type FileError struct {
	Path    string
	Line    int    // 1-based; 0 when the problem is not at one line
	Field   string // e.g. "gpus[1].vram"; empty when not about one field
	Problem string
	badSpec bool  // the value is wrong (as opposed to the file's shape)
	cause   error // e.g. the error from opening the file
}

func (e *FileError) Error() string {
	where := e.Path
	if e.Line > 0 {
		where = fmt.Sprintf("%s:%d", e.Path, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("hardware: GPU file %s: %s: %s", where, e.Field, e.Problem)
	}
	return fmt.Sprintf("hardware: GPU file %s: %s", where, e.Problem)
}

// Unwrap lets errors.Is match ErrBadGPUFile, ErrBadGPUSpec for bad values,
// and the underlying error (such as fs.ErrNotExist) where there is one.
func (e *FileError) Unwrap() []error {
	errs := []error{ErrBadGPUFile}
	if e.badSpec {
		errs = append(errs, ErrBadGPUSpec)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}
