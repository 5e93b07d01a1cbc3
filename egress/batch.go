package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batcher sends the transactions the Enforcer builds with google/nftables
// without the per-message overhead of the library's Flush: the library asks
// an acknowledgement for every message and an echo of every rule, so the
// kernel builds and queues two messages per rule and the library reads them
// one recvmsg at a time. The batcher is the library's test hook (nltest): it
// takes the encoded batch, clears NLM_F_ECHO everywhere and NLM_F_ACK on all
// but the last message, sends it in one sendmsg on its own socket, and reads
// until the last message's acknowledgement (the kernel reports every failed
// message, acknowledged or not, before it; a failed batch is aborted whole).
// The library then receives one synthetic acknowledgement per message.
type batcher struct {
	mu      sync.Mutex
	conn    *netlink.Conn
	pending int   // synthetic acknowledgements still owed to the library
	err     error // the batch's error, returned on the first receive
}

func dialBatcher(netns int, bufSize int) (*batcher, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, err
	}
	rc, err := c.SyscallConn()
	if err == nil {
		_ = rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufSize) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, bufSize)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
			}
		})
	}
	// Extended acks carry the kernel's error message for a failed message;
	// capped acks do not echo the (possibly large) failed message.
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	_ = c.SetOption(netlink.CapAcknowledge, true)
	return &batcher{conn: c}, nil
}

func (b *batcher) close() error { return b.conn.Close() }

// encoder returns an nftables.Conn that encodes into this batcher.
func (b *batcher) encoder() (*nftables.Conn, error) {
	return nftables.New(nftables.WithTestDial(b.fn))
}

var ackPayload = make([]byte, 4+16)

// fn is the nltest.Func: called with the batch on send, with nil on receive.
func (b *batcher) fn(req []netlink.Message) ([]netlink.Message, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if req == nil {
		if b.pending == 0 {
			return nil, errors.New("egress: unexpected receive")
		}
		b.pending--
		if err := b.err; err != nil {
			b.err = nil
			return nil, err
		}
		return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: ackPayload}}, nil
	}
	if len(req) < 3 || req[0].Header.Type != netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) {
		return nil, fmt.Errorf("egress: batcher: not a batch (%d messages)", len(req))
	}
	acks := 0
	for i := range req {
		h := &req[i].Header
		if h.Flags&netlink.Acknowledge != 0 {
			acks++
		}
		h.Flags &^= netlink.Acknowledge | netlink.Echo
		h.Sequence, h.PID = 0, 0
	}
	last := len(req) - 2 // the last message before the batch end
	req[last].Header.Flags |= netlink.Acknowledge
	b.pending = acks
	b.err = nil
	sent, err := b.conn.SendMessages(req)
	if err != nil {
		b.err = fmt.Errorf("sendmsg: %w", err)
		return nil, nil
	}
	first, lastSeq := sent[0].Header.Sequence, sent[last].Header.Sequence
	errs, err := b.readAcks(first, lastSeq)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		b.err = errors.Join(errs...)
	}
	return nil, nil
}

// readAcks reads raw netlink messages until the acknowledgement (or error) of
// the message lastSeq, or an error about the batch itself (first); it returns
// the errors the kernel reported.
func (b *batcher) readAcks(first, lastSeq uint32) ([]error, error) {
	rc, err := b.conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	var errs []error
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, _, _, _, rerr = unix.Recvmsg(int(fd), buf, nil, 0)
			return rerr != unix.EAGAIN && rerr != unix.EINTR
		}); err != nil {
			return errs, err
		}
		if rerr != nil {
			return errs, fmt.Errorf("recvmsg: %w", rerr)
		}
		done := false
		for p := buf[:n]; len(p) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(p))
			if l < unix.NLMSG_HDRLEN || l > len(p) {
				break
			}
			typ := binary.NativeEndian.Uint16(p[4:])
			flags := binary.NativeEndian.Uint16(p[6:])
			if typ == unix.NLMSG_ERROR && l >= unix.NLMSG_HDRLEN+4+unix.NLMSG_HDRLEN {
				body := p[unix.NLMSG_HDRLEN:l]
				code := int32(binary.NativeEndian.Uint32(body))
				seq := binary.NativeEndian.Uint32(body[4+8:])
				if code != 0 {
					msg := ""
					if flags&unix.NLM_F_ACK_TLVS != 0 {
						tl := body[4+unix.NLMSG_HDRLEN:]
						if flags&unix.NLM_F_CAPPED == 0 {
							ol := int(binary.NativeEndian.Uint32(body[4:]))
							if 4+ol <= len(body) {
								tl = body[4+ol:]
							}
						}
						if ad, err := netlink.NewAttributeDecoder(tl); err == nil {
							for ad.Next() {
								if ad.Type() == unix.NLMSGERR_ATTR_MSG {
									msg = ad.String()
								}
							}
						}
					}
					e := fmt.Errorf("message %d: %w", seq-first, syscall.Errno(-code))
					if msg != "" {
						e = fmt.Errorf("message %d: %w (%s)", seq-first, syscall.Errno(-code), msg)
					}
					errs = append(errs, e)
				}
				if seq == lastSeq || seq == first {
					done = true
				}
			}
			p = p[(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1):]
			if len(p) == 0 {
				break
			}
		}
		if done {
			return errs, nil
		}
	}
}
