package telemetry

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenHTTP binds the agent's HTTP address (--http-addr) with SO_REUSEPORT, so that during a restart
// handover the new process binds the same address while the old one still
// serves it: the kernel spreads new connections over both listeners until the
// old process closes its own (first thing on SIGTERM). Linux only lets
// processes of the same effective user join the group.
func ListenHTTP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr %s: %w", addr, err)
	}
	return ln, nil
}
