package l7

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/telemetry/event"
)

// Mode says which front end and protocol made a decision.
type Mode string

const (
	ModeHTTP            Mode = "http"             // explicit proxy, plain HTTP request
	ModeConnect         Mode = "connect"          // explicit proxy, CONNECT
	ModeTransparentTLS  Mode = "transparent-tls"  // redirected connection, TLS
	ModeTransparentHTTP Mode = "transparent-http" // redirected connection, HTTP
)

// decision is one decided request or connection; a blocked one is emitted as
// http.egress.blocked, an allowed one that Audit-mode policies would have
// blocked (Verdict.Audit set) as http.egress.audit.
type decision struct {
	Mode    Mode
	Client  netip.Addr
	Host    string // the name asked for (Host, CONNECT authority, SNI), as sent
	Port    int    // server port
	Dst     netip.Addr
	Verdict Verdict
	// Response is what the client got: "403" or "reset" ("" when allowed).
	Response string
}

// Event attributes of http.egress.* events besides server.address,
// server.port and network.transport.
const (
	AttrMode        = "egressd.l7.mode"     // the Mode
	AttrDestination = "destination.address" // the connection's destination (transparent proxy)
)

// Hooks are the proxy's outputs; every field is optional.
type Hooks struct {
	// Events receives http.egress.blocked for every denied request and
	// http.egress.audit for every allowed request that Audit-mode policies
	// would have denied (the request proceeds).
	Events event.Sink
	// Decided is called for every decision (metrics per verdict).
	Decided func(mode Mode, allowed bool, reason string)
	// Logger gets errors and debug lines.
	Logger *slog.Logger
	// Dial connects to servers; default a net.Dialer (tests dial inside a
	// network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (h *Hooks) log() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

func (h *Hooks) decided(ctx context.Context, d decision) {
	if h.Decided != nil {
		h.Decided(d.Mode, d.Verdict.Allowed, d.Verdict.Reason)
	}
	if h.Events == nil || (d.Verdict.Allowed && d.Verdict.Audit == nil) {
		return
	}
	h.Events.Emit(ctx, d.event())
}

// event is the http.egress.blocked event of a denied decision, or the
// http.egress.audit event of an allowed one with the audit verdict's reason,
// policy, rule and tier.
func (d decision) event() event.Event {
	name, v := event.HTTPBlocked, d.Verdict
	if v.Allowed {
		name, v = event.HTTPAudit, *v.Audit
	}
	attrs := map[string]string{
		"server.address":    d.Host,
		"server.port":       strconv.Itoa(d.Port),
		"network.transport": "tcp",
		AttrMode:            string(d.Mode),
	}
	if d.Dst.IsValid() {
		attrs[AttrDestination] = d.Dst.String()
	}
	ev := event.Event{
		Name: name, Workload: v.Workload.String(), QName: d.Host,
		Policy: v.Policy, Rule: v.Rule, Tier: v.Tier, Reason: v.Reason, CNAME: v.CNAME,
		Response: d.Response, Attrs: attrs,
	}
	if d.Client.IsValid() {
		ev.Client = d.Client.String()
	}
	return ev
}

// Limits bound the resources of a proxy. Zero values take the defaults.
type Limits struct {
	// MaxConns is the number of client connections served at once; further
	// connections wait in the kernel's accept queue (default 4096).
	MaxConns int
	// HelloTimeout bounds the wait for the ClientHello or the request header
	// (default 5s).
	HelloTimeout time.Duration
	// IdleTimeout closes a connection with no traffic in either direction
	// (default 5m).
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to the server (default 10s).
	DialTimeout time.Duration
	// MaxHelloSize caps the bytes read for a ClientHello (default 16 KiB).
	MaxHelloSize int
}

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = 4096
	}
	if l.HelloTimeout <= 0 {
		l.HelloTimeout = 5 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 5 * time.Minute
	}
	if l.DialTimeout <= 0 {
		l.DialTimeout = 10 * time.Second
	}
	if l.MaxHelloSize <= 0 {
		l.MaxHelloSize = DefaultMaxHelloSize
	}
	return l
}

// limitListener accepts at most n connections at once.
type limitListener struct {
	net.Listener
	sem    chan struct{}
	active atomic.Int64
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	l.active.Add(1)
	return &limitConn{Conn: c, l: l}, nil
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.active.Add(-1); <-c.l.sem })
	return err
}

// CloseWrite half-closes when the underlying connection can.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func tcpConn(c net.Conn) *net.TCPConn {
	for {
		switch x := c.(type) {
		case *net.TCPConn:
			return x
		case *limitConn:
			c = x.Conn
		case *prefixConn:
			c = x.Conn
		default:
			return nil
		}
	}
}

// reset closes c with a TCP RST (SO_LINGER 0).
func reset(c net.Conn) {
	if tc := tcpConn(c); tc != nil {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// prefixConn replays buffered bytes before reading from the connection.
type prefixConn struct {
	net.Conn
	buf []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// splice copies both ways until both directions end or nothing moves in
// either direction for idle; then both connections are closed.
func splice(a, b net.Conn, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction is busy
				}
				if !errors.Is(err, io.EOF) {
					// timeout or error: end both directions
					_ = a.SetDeadline(time.Now())
					_ = b.SetDeadline(time.Now())
				}
				break
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// dialFirst connects to the first address of addrs that answers.
func (h *Hooks) dialFirst(ctx context.Context, addrs []netip.Addr, port int, timeout time.Duration) (net.Conn, error) {
	dial := h.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	var errs []error
	for _, ip := range addrs {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		c, err := dial(dctx, "tcp", netip.AddrPortFrom(ip, uint16(port)).String())
		cancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
