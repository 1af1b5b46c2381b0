package weightcache

import (
	"fmt"
	"runtime/debug"
)

// readMapped runs read, which reads a file's mapping. Reading a mapping
// faults where a read would fail (the disk gives an I/O error, the file
// was cut short underneath); the fault panics only this goroutine and
// comes back as an error naming what, not as a crash of the daemon. read
// must not hand the mapping to another goroutine.
func readMapped(what string, read func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(interface{ Addr() uintptr })
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("weightcache: %s: fault reading the file's mapping at %#x", what, f.Addr())
		}
	}()
	return read()
}
