package node

import (
	"errors"
	"net"
	"strconv"
	"syscall"

	"github.com/multiformats/go-multiaddr"
)

// checkListen binds each listen address that names a port, for a moment,
// so a port taken by another process is reported by its address before the
// mesh starts (libp2p's own error does not say which address failed).
// Addresses it cannot interpret are left to the mesh.
func checkListen(addrs []multiaddr.Multiaddr) error {
	for _, a := range addrs {
		if err := bindOnce(a); err != nil {
			return &ListenInUseError{Addr: a.String(), Err: err}
		}
	}
	return nil
}

// bindOnce returns a bind error only when it is EADDRINUSE.
func bindOnce(a multiaddr.Multiaddr) error {
	network, hostport, ok := socketOf(a)
	if !ok {
		return nil
	}
	var err error
	switch network {
	case "tcp4", "tcp6":
		var l net.Listener
		if l, err = net.Listen(network, hostport); err == nil {
			l.Close()
		}
	case "udp4", "udp6":
		var c net.PacketConn
		if c, err = net.ListenPacket(network, hostport); err == nil {
			c.Close()
		}
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	return nil
}

// socketOf maps /ip4|ip6/A/tcp|udp/P/... with P != 0 to a Go network and
// address.
func socketOf(a multiaddr.Multiaddr) (network, hostport string, ok bool) {
	ipv := "4"
	ip, err := a.ValueForProtocol(multiaddr.P_IP4)
	if err != nil {
		if ip, err = a.ValueForProtocol(multiaddr.P_IP6); err != nil {
			return "", "", false
		}
		ipv = "6"
	}
	proto := "tcp"
	port, err := a.ValueForProtocol(multiaddr.P_TCP)
	if err != nil {
		if port, err = a.ValueForProtocol(multiaddr.P_UDP); err != nil {
			return "", "", false
		}
		proto = "udp"
	}
	if n, err := strconv.Atoi(port); err != nil || n == 0 {
		return "", "", false
	}
	return proto + ipv, net.JoinHostPort(ip, port), true
}
