package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Transparent serves connections redirected to it by nftables (egress
// ApplyRedirect): TLS is decided on the ClientHello's SNI and spliced to the
// original destination without being terminated; plain HTTP is decided per
// request on the Host header and forwarded to the original destination.
type Transparent struct {
	checker *Checker
	hooks   Hooks
	limits  Limits
	// OrigDst returns the original destination of a redirected connection;
	// the default reads SO_ORIGINAL_DST.
	OrigDst func(net.Conn) (netip.AddrPort, error)

	httpConns chan net.Conn
	httpSrv   *http.Server
	mu        sync.Mutex
	lns       []net.Listener
	closed    chan struct{}
	wg        sync.WaitGroup
	conns     map[net.Conn]struct{}
}

// NewTransparent returns a transparent proxy deciding with c.
func NewTransparent(c *Checker, limits Limits, hooks Hooks) *Transparent {
	t := &Transparent{checker: c, hooks: hooks, limits: limits.WithDefaults(), OrigDst: OriginalDst,
		httpConns: make(chan net.Conn), closed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d, _ := ctx.Value(ctxKey{}).(*dialTarget)
			if d == nil {
				return nil, errDenied
			}
			return t.hooks.dialFirst(ctx, d.addrs, d.port, t.limits.DialTimeout)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     t.limits.IdleTimeout,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Host
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	t.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.serveHTTP(w, r, rp) }),
		ReadHeaderTimeout: t.limits.HelloTimeout,
		IdleTimeout:       t.limits.IdleTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c.(*redirected))
		},
	}
	go t.httpSrv.Serve(&chanListener{c: t.httpConns, closed: t.closed})
	return t
}

type connKey struct{}

// redirected is an accepted connection with its original destination.
type redirected struct {
	net.Conn
	client netip.Addr
	dst    netip.AddrPort
}

func (r *redirected) CloseWrite() error {
	if cw, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type chanListener struct {
	c      chan net.Conn
	closed chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// Serve accepts redirected connections on ln until Close.
func (t *Transparent) Serve(ln net.Listener) error {
	t.mu.Lock()
	select {
	case <-t.closed:
		t.mu.Unlock()
		return net.ErrClosed
	default:
	}
	t.lns = append(t.lns, ln)
	t.mu.Unlock()
	ll := newLimitListener(ln, t.limits.MaxConns)
	for {
		c, err := ll.Accept()
		if err != nil {
			select {
			case <-t.closed:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.track(c, true)
			defer t.track(c, false)
			t.handle(c)
		}()
	}
}

func (t *Transparent) track(c net.Conn, add bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
}

// Active is the number of client connections being served.
func (t *Transparent) Active() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// Close stops accepting and closes every connection.
func (t *Transparent) Close() error {
	t.mu.Lock()
	select {
	case <-t.closed:
	default:
		close(t.closed)
	}
	for _, ln := range t.lns {
		_ = ln.Close()
	}
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	_ = t.httpSrv.Close()
	t.wg.Wait()
	return nil
}

func (t *Transparent) handle(c net.Conn) {
	ctx := context.Background()
	client := addrOf(c.RemoteAddr())
	dst, err := t.OrigDst(c)
	if err != nil {
		t.hooks.log().Debug("transparent: no original destination", "client", client, "err", err)
		reset(c)
		return
	}
	ev := decision{Mode: ModeTransparentTLS, Client: client, Dst: dst.Addr(), Port: int(dst.Port())}
	deadline := time.Now().Add(t.limits.HelloTimeout)
	// The first byte tells TLS (a handshake record) from plain HTTP.
	first := make([]byte, 1)
	_ = c.SetReadDeadline(deadline)
	if _, err := io.ReadFull(c, first); err != nil {
		ev.Verdict = Verdict{Reason: ReasonHelloTimeout}
		if !isTimeout(err) {
			ev.Verdict.Reason = ReasonBadHello
		}
		t.deny(ctx, c, ev)
		return
	}
	pc := &prefixConn{Conn: c, buf: first}
	if first[0] != recordHandshake {
		_ = c.SetReadDeadline(time.Time{})
		select {
		case t.httpConns <- &redirected{Conn: pc, client: client, dst: dst}:
		case <-t.closed:
			_ = c.Close()
		}
		return
	}
	hello, raw, err := ReadClientHello(pc, t.limits.MaxHelloSize, deadline)
	switch {
	case err != nil && isTimeout(err):
		ev.Verdict = Verdict{Reason: ReasonHelloTimeout}
	case err != nil:
		ev.Verdict = Verdict{Reason: ReasonBadHello}
	case hello.ECH:
		ev.Host = hello.ServerName
		ev.Verdict = Verdict{Reason: ReasonECH}
	case hello.ServerName == "":
		ev.Verdict = Verdict{Reason: ReasonNoSNI}
	default:
		ev.Host = hello.ServerName
		ev.Verdict = t.checker.Check(ctx, Request{Client: client, Host: hello.ServerName, Port: int(dst.Port()), Dst: dst.Addr()})
	}
	if !ev.Verdict.Allowed {
		t.deny(ctx, c, ev)
		return
	}
	t.hooks.decided(ctx, ev)
	server, err := t.hooks.dialFirst(ctx, []netip.Addr{dst.Addr()}, int(dst.Port()), t.limits.DialTimeout)
	if err != nil {
		t.hooks.log().Debug("transparent: dial", "dst", dst, "err", err)
		reset(c)
		return
	}
	if _, err := server.Write(raw); err != nil {
		reset(c)
		_ = server.Close()
		return
	}
	splice(c, server, t.limits.IdleTimeout)
}

func (t *Transparent) deny(ctx context.Context, c net.Conn, ev decision) {
	ev.Response = "reset"
	t.hooks.decided(ctx, ev)
	reset(c)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (t *Transparent) serveHTTP(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
	rc, _ := r.Context().Value(connKey{}).(*redirected)
	if rc == nil {
		http.Error(w, "egressd: not a redirected connection", http.StatusInternalServerError)
		return
	}
	ev := decision{Mode: ModeTransparentHTTP, Client: rc.client, Dst: rc.dst.Addr(), Port: int(rc.dst.Port()), Host: r.Host}
	host, _, err := splitHostPort(r.Host, int(rc.dst.Port()))
	if err != nil || r.Host == "" {
		ev.Verdict = Verdict{Reason: ReasonNoHost}
	} else {
		ev.Host = host
		ev.Verdict = t.checker.Check(r.Context(), Request{Client: rc.client, Host: host, Port: int(rc.dst.Port()), Dst: rc.dst.Addr()})
	}
	if !ev.Verdict.Allowed {
		ev.Response = "403"
		t.hooks.decided(r.Context(), ev)
		w.Header().Set("X-Egressd-Reason", ev.Verdict.Describe())
		w.Header().Set("Connection", "close")
		http.Error(w, "egressd: "+r.Method+" "+r.Host+" blocked: "+ev.Verdict.Describe(), http.StatusForbidden)
		return
	}
	t.hooks.decided(r.Context(), ev)
	ctx := context.WithValue(r.Context(), ctxKey{}, &dialTarget{addrs: []netip.Addr{rc.dst.Addr()}, port: int(rc.dst.Port())})
	rp.ServeHTTP(w, r.WithContext(ctx))
}

// OriginalDst reads the pre-NAT destination of a connection redirected by
// nftables (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc := tcpConn(c)
	if tc == nil {
		return netip.AddrPort{}, errors.New("l7: not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var out netip.AddrPort
	var serr error
	v6 := addrOf(c.LocalAddr()).Is6()
	cerr := rc.Control(func(fd uintptr) {
		if !v6 {
			var sa unix.RawSockaddrInet4
			l := uint32(unsafe.Sizeof(sa))
			_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
			if e != 0 {
				serr = e
				return
			}
			p := (*[2]byte)(unsafe.Pointer(&sa.Port))
			out = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
			return
		}
		var sa unix.RawSockaddrInet6
		l := uint32(unsafe.Sizeof(sa))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IPV6, ip6tSOOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = e
			return
		}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		out = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	})
	if cerr != nil {
		return netip.AddrPort{}, cerr
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("l7: SO_ORIGINAL_DST: %w", serr)
	}
	return out, nil
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h).
const ip6tSOOriginalDst = 80
