package node

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors of package node. Callers test them with errors.Is; the
// messages of the wrapping errors say what to do about them.
var (
	// ErrHomeLocked: another daemon holds the home's lock. The wrapping
	// message names its PID and the home.
	ErrHomeLocked = errors.New("node: home is in use by another shoal daemon")
	// ErrNoDaemon: no daemon answers on the home's control socket.
	ErrNoDaemon = errors.New("node: no shoal daemon is running")
	// ErrListenInUse: a listen address is taken by another process.
	ErrListenInUse = errors.New("node: listen address is in use")
	// ErrOtherPool: joining a pool with a home that belongs to another pool.
	ErrOtherPool = errors.New("node: home already belongs to another pool")
	// ErrInvalidConfig: Config.validate rejected a field.
	ErrInvalidConfig = errors.New("node: invalid config")
	// ErrBadIdentity: identity.key exists but cannot be read as a key.
	ErrBadIdentity = errors.New("node: identity key is unreadable")
	// ErrBadPoolFile: pool.json exists but cannot be read.
	ErrBadPoolFile = errors.New("node: pool.json is unreadable")
	// ErrJoin: the daemon could not join its pool at start.
	ErrJoin = errors.New("node: could not join the pool")
	// ErrSocketPath: the control socket path is too long for a unix socket.
	ErrSocketPath = errors.New("node: control socket path too long")
	// ErrDaemonExited: a daemon started by Spawn exited before it was ready.
	ErrDaemonExited = errors.New("node: daemon exited before it was ready")
	// ErrStartTimeout: a daemon started by Spawn was not ready in time.
	ErrStartTimeout = errors.New("node: daemon did not become ready in time")
	// ErrLeaveTimeout: the daemon did not stop in time after POST /v1/leave.
	ErrLeaveTimeout = errors.New("node: daemon did not stop in time")
	// ErrAPI: the daemon answered a control API call with an error status;
	// see *APIError for the status and message.
	ErrAPI = errors.New("node: control API error")
)

// ListenInUseError says which listen address is taken. It matches
// ErrListenInUse with errors.Is and unwraps to the bind error.
type ListenInUseError struct {
	Addr string // the multiaddr as configured
	Err  error  // the bind error
}

func (e *ListenInUseError) Error() string {
	return fmt.Sprintf("node: listen address %s is in use; pass --listen with another port (or port 0)", e.Addr)
}

// Is reports target == ErrListenInUse.
func (e *ListenInUseError) Is(target error) bool { return target == ErrListenInUse }

// Unwrap returns the bind error.
func (e *ListenInUseError) Unwrap() error { return e.Err }

// APIError is an error status from the control API.
type APIError struct {
	StatusCode int    // HTTP status
	Message    string // the "error" field of the answer
}

func (e *APIError) Error() string {
	if e.StatusCode == http.StatusOK {
		// Failed after the answer began (a streamed pull or verify).
		return "node: " + e.Message
	}
	return fmt.Sprintf("node: daemon answered %d: %s", e.StatusCode, e.Message)
}

// Is reports target == ErrAPI.
func (e *APIError) Is(target error) bool { return target == ErrAPI }
