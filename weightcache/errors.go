package weightcache

import "errors"

// Errors callers test with errors.Is. Each is wrapped with detail.
var (
	// ErrBadManifest: a manifest that is malformed or not canonical.
	ErrBadManifest = errors.New("weightcache: bad manifest")
	// ErrManifestMismatch: manifest bytes that do not hash to the model ID.
	ErrManifestMismatch = errors.New("weightcache: manifest does not match its ID")
	// ErrBadID: a string that is not a model ID.
	ErrBadID = errors.New("weightcache: malformed model ID")
	// ErrUnsafePath: a path that escapes the model directory, is absolute,
	// or goes through a symlinked directory or a special file.
	ErrUnsafePath = errors.New("weightcache: unsafe path")
	// ErrHashMismatch: bytes that do not match the hash they were promised
	// under (a chunk, a whole file, an origin download).
	ErrHashMismatch = errors.New("weightcache: hash mismatch")
	// ErrSizeMismatch: a file or download larger or smaller than promised.
	ErrSizeMismatch = errors.New("weightcache: size mismatch")
	// ErrNotFound: no such model (or name) in this store.
	ErrNotFound = errors.New("weightcache: model not found")
	// ErrIncomplete: the model is known but not all of it is here and verified.
	ErrIncomplete = errors.New("weightcache: model incomplete")
	// ErrPinned: the model is pinned and cannot be removed or evicted.
	ErrPinned = errors.New("weightcache: model is pinned")
	// ErrCacheFull: the size limit cannot be met without evicting pinned
	// or in-use models.
	ErrCacheFull = errors.New("weightcache: cache size limit reached")
	// ErrDiskFull: the file system ran out of space.
	ErrDiskFull = errors.New("weightcache: disk full")
	// ErrBusy: the model is being fetched by another call.
	ErrBusy = errors.New("weightcache: model busy")
	// ErrNoProviders: no peer could serve the model (all failed, banned or none found).
	ErrNoProviders = errors.New("weightcache: no providers")
	// ErrProtocol: a peer broke the transfer protocol.
	ErrProtocol = errors.New("weightcache: protocol violation")
	// ErrOrigin: an origin server refused or failed a download.
	ErrOrigin = errors.New("weightcache: origin download failed")
	// ErrConfig: a Config or FetchConfig that cannot work.
	ErrConfig = errors.New("weightcache: bad config")
	// ErrBadName: a model name that is empty, too long, or looks like an ID.
	ErrBadName = errors.New("weightcache: bad model name")
	// ErrClosed: the store or server is closed.
	ErrClosed = errors.New("weightcache: closed")
)
