package dnsproxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// TCP connection limits (issue 17 item 5).
//
// Every TCP listener is wrapped in a tcpListener: a connection over the
// client's limit (TCPMaxConnsPerClient) or over the global limit (the lower of
// TCPMaxConns and the file descriptor budget, fdBudget) is closed as soon as
// it is accepted, with a reset, and counted — unless, at the global limit,
// another client holds at least two more connections than this one's client:
// then that client's oldest connection is reset instead (tcpTable). Accepting it first keeps the
// kernel's backlog moving, so that other clients' connections are not stuck
// behind it; the descriptor this takes comes out of the reserve and is given
// back at once.
//
// Accepted connections are wrapped in a tcpConn that enforces the idle
// timeout against the last reply sent: the miekg/dns server sets a fresh read
// deadline before every message it reads, also after messages it does not
// answer (an empty "00 00" message, a header-only fragment, a response), so
// those would keep an otherwise idle connection open for MaxTCPQueries ×
// IdleTimeout (128 × 10 s ≈ 21 minutes). tcpConn never lets a read wait past
// the time of the last reply (or of the accept) + TCPIdleTimeout.

// fdBudget splits the process's file descriptors above reserve evenly
// between client TCP connections and the upstream sockets of queries in
// flight: it returns the caps on both. nofile is RLIMIT_NOFILE (soft).
// Descriptors below the reserve are left for everything else: policy and
// workload reloads, checkpoints, the HTTP server, netlink, the listeners.
func fdBudget(nofile uint64, reserve int) (tcp, inflight int) {
	if nofile > 1<<40 {
		nofile = 1 << 40 // RLIM_INFINITY
	}
	avail := int64(nofile) - int64(reserve)
	half := max(avail/2, 1)
	return int(min(half, 1<<30)), int(min(half, 1<<30))
}

// nofileLimit returns the soft RLIMIT_NOFILE of the process (Go raises it to
// the hard limit at startup).
func nofileLimit() (uint64, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return r.Cur, nil
}

// connCounter counts queries in flight per client address and in total. An entry exists only while its count is above
// zero, so the map never holds more entries than the global limit allows.
type connCounter struct {
	mu    sync.Mutex
	per   map[netip.Addr]int
	total int
}

// acquire counts one more for client unless the client already has
// perClient (0: no per-client limit) or the total is at global (0: none).
// It returns why it refused: errPerClient or errGlobal.
func (c *connCounter) acquire(client netip.Addr, perClient, global int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if global > 0 && c.total >= global {
		return errGlobal
	}
	n := c.per[client]
	if perClient > 0 && n >= perClient {
		return errPerClient
	}
	if c.per == nil {
		c.per = make(map[netip.Addr]int)
	}
	c.per[client] = n + 1
	c.total++
	return nil
}

// release undoes one acquire.
func (c *connCounter) release(client netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.per[client]; n > 1 {
		c.per[client] = n - 1
	} else {
		delete(c.per, client)
	}
	c.total--
}

// tcpTable holds the open client TCP connections per client, oldest first.
// At the global limit a new connection takes the slot of the oldest
// connection of the client holding the most, when that client holds at least
// two more than the newcomer's: the connections converge to equal shares
// instead of first come, first served, so a flood from a few clients cannot
// keep another client's TCP out (issue 17 item 5). Finding that client scans
// the clients, at most the global limit of them, and only at the limit.
type tcpTable struct {
	mu    sync.Mutex
	per   map[netip.Addr][]*tcpConn
	total int
}

// admit adds c unless its client has perClient connections (0: no limit)
// or the table is at global (0: no limit) with no connection to evict; it
// returns the connection evicted to make room (to be reset by the caller),
// or why it refused.
func (t *tcpTable) admit(c *tcpConn, perClient, global int) (evicted *tcpConn, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.per[c.client])
	if perClient > 0 && n >= perClient {
		return nil, errPerClient
	}
	if global > 0 && t.total >= global {
		var most netip.Addr
		mostN := 0
		for a, cs := range t.per {
			if len(cs) > mostN {
				most, mostN = a, len(cs)
			}
		}
		if mostN < n+2 {
			return nil, errGlobal
		}
		evicted = t.per[most][0]
		t.remove(evicted)
	}
	if t.per == nil {
		t.per = make(map[netip.Addr][]*tcpConn)
	}
	t.per[c.client] = append(t.per[c.client], c)
	t.total++
	return evicted, nil
}

// release removes c if it is still in the table (an evicted connection was
// removed already).
func (t *tcpTable) release(c *tcpConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.remove(c)
}

func (t *tcpTable) remove(c *tcpConn) {
	cs := t.per[c.client]
	for i, x := range cs {
		if x == c {
			if len(cs) == 1 {
				delete(t.per, c.client)
			} else {
				t.per[c.client] = append(cs[:i:i], cs[i+1:]...)
			}
			t.total--
			return
		}
	}
}

// open returns the connections open and the number of clients they are from.
func (t *tcpTable) open() (total, clients int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total, len(t.per)
}

var (
	errPerClient = errors.New("per-client limit")
	errGlobal    = errors.New("global limit")
)

// tcpListener applies the connection limits to a listener.
type tcpListener struct {
	net.Listener
	srv       *Server
	perClient int
	global    int
	idle      time.Duration
	closed    atomic.Bool
}

// Accept returns the next connection within the limits; connections over a
// limit are reset and counted. Temporary errors (EMFILE when the process is
// out of descriptors after all) back off instead of spinning, as net/http
// does; miekg/dns would retry them at once.
func (l *tcpListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if retryableAccept(err) && !l.closed.Load() {
				l.srv.st.tcpAcceptErrors.Add(1)
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return nil, err
		}
		delay = 0
		client := addrOf(c.RemoteAddr())
		tc := &tcpConn{Conn: c, srv: l.srv, client: client, idle: l.idle, idleUntil: time.Now().Add(l.idle)}
		evicted, err := l.srv.conns.admit(tc, l.perClient, l.global)
		if evicted != nil {
			l.srv.st.tcpEvicted.Add(1)
			evicted.reset()
		}
		if err != nil {
			if err == errPerClient {
				l.srv.st.tcpRejectedClient.Add(1)
			} else {
				l.srv.st.tcpRejectedGlobal.Add(1)
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset: no TIME_WAIT, the descriptor is free at once
			}
			c.Close()
			continue
		}
		l.srv.st.tcpAccepted.Add(1)
		return tc, nil
	}
}

// retryableAccept reports the accept errors that leave the listener usable:
// out of descriptors or memory, a connection aborted before it was accepted.
func retryableAccept(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Close closes the listener.
func (l *tcpListener) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

// tcpConn is an accepted client connection: it holds reads to the idle
// timeout counted from the last reply and gives its slot back on Close.
type tcpConn struct {
	net.Conn
	srv    *Server
	client netip.Addr
	idle   time.Duration

	mu        sync.Mutex
	idleUntil time.Time // no read waits past this
	clamped   bool      // the read deadline in force is idleUntil
	once      sync.Once
}

// SetReadDeadline sets the deadline requested, but never later than the
// idle deadline.
func (c *tcpConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.clamped = t.IsZero() || t.After(c.idleUntil)
	if c.clamped {
		t = c.idleUntil
	}
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read one as SetReadDeadline does.
func (c *tcpConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// Read reads; a timeout at the idle deadline is counted.
func (c *tcpConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.mu.Lock()
			idle := c.clamped
			c.mu.Unlock()
			if idle {
				c.srv.st.tcpIdleClosed.Add(1)
			}
		}
	}
	return n, err
}

// Write writes a reply; a reply sent restarts the idle timeout.
func (c *tcpConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil {
		c.mu.Lock()
		c.idleUntil = time.Now().Add(c.idle)
		c.mu.Unlock()
	}
	return n, err
}

// Close closes the connection once and gives its slot back. When the client
// has sent more than was read (it pipelined past TCPMaxQueries), closing
// outright would reset the connection and could lose replies not yet
// delivered: the write side is shut first (the client reads every reply, then
// end of file) and what the client sent is drained, for at most
// TCPReadTimeout and 64 KiB, before the close.
func (c *tcpConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		if tc, ok := c.Conn.(*net.TCPConn); ok && pendingInput(tc) {
			c.srv.st.tcpDrained.Add(1)
			if tc.CloseWrite() == nil {
				_ = tc.SetReadDeadline(time.Now().Add(c.srv.s.TCPReadTimeout))
				_, _ = io.CopyN(io.Discard, tc, 64<<10)
			}
		}
		err = c.Conn.Close()
		c.srv.conns.release(c)
	})
	return err
}

// reset closes the connection at once with a reset (its slot was taken
// back by the table): the goroutine serving it sees its read or write fail
// and calls Close, which gives nothing back.
func (c *tcpConn) reset() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Conn.Close()
}

// pendingInput reports whether bytes the client sent wait unread.
func pendingInput(tc *net.TCPConn) bool {
	n := 0
	err := control(tc, func(fd int) error {
		var err error
		n, err = unix.IoctlGetInt(fd, unix.SIOCINQ)
		return err
	})
	return err == nil && n > 0
}

// withinBudget lowers the TCP connection cap and the in-flight cap (0:
// unbounded) to the file descriptor budget.
func withinBudget(tcp, inflight int, nofile uint64, reserve int) (int, int) {
	bt, bi := fdBudget(nofile, reserve)
	if tcp <= 0 || tcp > bt {
		tcp = bt
	}
	if inflight <= 0 || inflight > bi {
		inflight = bi
	}
	return tcp, inflight
}
