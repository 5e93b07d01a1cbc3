package dnsproxy

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHandoverSteersTCP: the TCP listener is plain TCP (not MPTCP, which Go
// uses by default for listeners since 1.24 where the kernel enables it), so
// the reuseport steering program attaches to it and Handover reports no
// error. On an MPTCP listener the attach fails with EOPNOTSUPP ("handover:
// operation not supported" on every SIGTERM) and TCP queries queued on the
// old listener during the handover are lost.
func TestHandoverSteersTCP(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{up.addr}, nil)
	h.srv.mu.Lock()
	groups := h.srv.groups
	h.srv.mu.Unlock()
	for _, g := range groups {
		proto := -1
		if err := control(g.tcp, func(fd int) error {
			var err error
			proto, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if proto != unix.IPPROTO_TCP {
			t.Errorf("TCP listener %v has protocol %d, want IPPROTO_TCP (%d)", g.tcp.Addr(), proto, unix.IPPROTO_TCP)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Handover(ctx, 0); err != nil {
		t.Fatalf("Handover: %v", err)
	}
}
