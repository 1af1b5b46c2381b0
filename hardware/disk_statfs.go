//go:build linux || darwin || freebsd

package hardware

import "syscall"

// diskFree returns the bytes an unprivileged process may still write on the
// filesystem holding path.
func diskFree(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	if st.Bavail <= 0 || st.Bsize <= 0 {
		return 0, nil
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
