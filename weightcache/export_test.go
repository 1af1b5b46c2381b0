package weightcache

// SetWriteHook makes every chunk write call h first; an error from h fails
// the write as the disk would (tests simulate a full disk with it).
func (s *Store) SetWriteHook(h func(n int) error) { s.writeHook = h }
