package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// Deps are what the resolver talks to. Every field is optional except as noted.
type Deps struct {
	// Engine decides lookups. Nil: no policy, every query is forwarded and
	// nothing is programmed.
	Engine *policy.Engine
	// Sets receives the answer addresses of allowed lookups; SetNamer names
	// the set of an FQDN rule (required with Sets). Nil Sets: policy decisions
	// are made but nothing is programmed.
	Sets     ipset.Manager
	SetNamer SetNamer
	// RecordLookup is called after a successful set write with the addresses
	// written and until when their entries last, so that the reference model
	// agrees with the kernel (default when Engine is set:
	// Engine.Store().RecordLookupUntil; a no-op func disables it).
	RecordLookup func(w policy.WorkloadKey, qname string, ips []netip.Addr, until time.Time)
	// Events receives the resolver's events (blocked, audited and allowed
	// lookups, tunnel, rebinding and answer-cap events; default: none).
	Events event.Sink
	// Observer receives latencies for histograms.
	Observer Observer
	// Now is the clock of the cache and the rate limiter (default time.Now).
	Now func() time.Time
	// Tunnel is DNS tunnel detection (tunnelhook.go); nil: off.
	Tunnel TunnelDetector
}

// Server is the node-local resolver: a dns.Handler and the listeners serving
// it. Create it with New, then Start (or Serve) and Shutdown.
type Server struct {
	s     *settings
	deps  Deps
	fwd   *forwarder
	cache *cache
	rl    *rateLimiter[netip.Addr]
	rrl   *rrl
	st    counters

	flight      singleflight.Group
	inflight    atomic.Int64
	inflightPer connCounter // queries in flight per client (MaxInflightPerClient)
	conns       tcpTable    // open client TCP connections (tcplimit.go)
	fast        fastState   // the UDP cache-hit path (fastpath.go)

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	servers []*dns.Server
	addrs   []netip.AddrPort
	groups  []reuseGroup     // the sockets of every listen address (handover)
	own     []netip.AddrPort // addrs, set before the listeners serve and then only read
	started bool
	wg      sync.WaitGroup

	track *tracker // name → IP state (tracker.go, checkpoint.go)

	unknown *unknownClients // sources that are no workload (unknown.go)
}

// New validates cfg and returns a resolver that has not started listening.
func New(cfg Config, deps Deps) (*Server, error) {
	s, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	if deps.Sets != nil && deps.SetNamer == nil {
		return nil, errors.New("dnsproxy: Deps.SetNamer is required with Deps.Sets")
	}
	if deps.Events == nil {
		deps.Events = event.Discard
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.RecordLookup == nil && deps.Engine != nil {
		store := deps.Engine.Store()
		deps.RecordLookup = func(w policy.WorkloadKey, qname string, ips []netip.Addr, until time.Time) {
			store.RecordLookupUntil(w, qname, until, ips...)
		}
	}
	srv := &Server{s: s, deps: deps}
	srv.ctx, srv.cancel = context.WithCancel(context.Background())
	srv.st = counters{}
	srv.track = newTracker(s.MaxIPsPerName, s.MaxElementsPerWorkload)
	srv.unknown = newUnknownClients(s)
	srv.fwd = newForwarder(s, &srv.st, &srv.deps.Observer)
	if srv.cache, err = newCache(s); err != nil {
		return nil, err
	}
	if srv.rl, err = newRateLimiter(s); err != nil {
		return nil, err
	}
	if srv.rrl, err = newRRL(s); err != nil {
		return nil, err
	}
	return srv, nil
}

func (srv *Server) now() time.Time { return srv.deps.Now() }

// Stats returns a snapshot of the counters.
func (srv *Server) Stats() Stats {
	st := srv.st.snapshot()
	st.TCPOpen, st.TCPClients = srv.conns.open()
	st.Inflight = int(srv.inflight.Load())
	return st
}

// Limits returns the caps in force on client TCP connections and on queries
// in flight (Config.TCPMaxConns and MaxInflight within the file descriptor
// budget; 0: unbounded).
func (srv *Server) Limits() (tcpConns, inflight int) {
	return srv.s.tcpMaxConns, srv.s.maxInflight
}

// CacheLen returns the number of cached answers.
func (srv *Server) CacheLen() int { return srv.cache.len() }

// UpstreamHealth reports, per upstream ("host:port"), whether it is
// considered up.
func (srv *Server) UpstreamHealth() map[string]bool { return srv.fwd.healthy() }

// Addrs returns the bound listen addresses (with the ports picked for port 0),
// once started.
func (srv *Server) Addrs() []netip.AddrPort {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return append([]netip.AddrPort(nil), srv.addrs...)
}

// Start binds every listen address (UDPSockets UDP sockets with SO_REUSEPORT
// and one TCP listener on the same port), starts serving and the upstream
// health probe, and returns. On error nothing is left listening.
func (srv *Server) Start() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.started {
		return errors.New("dnsproxy: already started")
	}
	var pcs []net.PacketConn
	var lns []net.Listener
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, a := range srv.s.listen {
		p, l, bound, err := bind(a, srv.s.UDPSockets)
		if err != nil {
			closeAll()
			return err
		}
		pcs, lns = append(pcs, p...), append(lns, l)
		srv.addrs = append(srv.addrs, bound)
		srv.groups = append(srv.groups, reuseGroup{udp: p, tcp: l})
	}
	// A steering program left by a predecessor's handover would send every
	// query to one of our sockets: back to hashing over the whole group.
	for _, g := range srv.groups {
		g.unsteer()
	}
	srv.started = true
	srv.own = append([]netip.AddrPort(nil), srv.addrs...)
	var ready sync.WaitGroup
	ready.Add(len(pcs) + len(lns))
	for _, pc := range pcs {
		srv.run(&dns.Server{PacketConn: pc, Handler: srv, MsgAcceptFunc: srv.accept, MsgInvalidFunc: srv.invalid,
			DecorateReader: srv.decorateReader, UDPSize: 4096, ReadTimeout: srv.s.TCPReadTimeout, WriteTimeout: srv.s.TCPReadTimeout,
			NotifyStartedFunc: ready.Done})
	}
	idle := srv.s.TCPIdleTimeout
	maxQueries := srv.s.TCPMaxQueries
	if maxQueries < 0 {
		maxQueries = -1 // miekg/dns: unlimited
	}
	for _, ln := range lns {
		tl := &tcpListener{Listener: ln, srv: srv, perClient: max(srv.s.TCPMaxConnsPerClient, 0),
			global: srv.s.tcpMaxConns, idle: idle}
		srv.run(&dns.Server{Listener: tl, Handler: srv, MsgAcceptFunc: srv.accept, MsgInvalidFunc: srv.invalid,
			ReadTimeout: srv.s.TCPReadTimeout, WriteTimeout: srv.s.TCPReadTimeout, MaxTCPQueries: maxQueries,
			IdleTimeout: func() time.Duration { return idle }, NotifyStartedFunc: ready.Done})
	}
	ready.Wait() // Shutdown before the servers run would not stop them
	srv.fwd.start()
	go srv.sweeper(srv.s.SweepInterval) // ends with srv.ctx (Shutdown)
	return nil
}

func (srv *Server) run(ds *dns.Server) {
	srv.servers = append(srv.servers, ds)
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		_ = ds.ActivateAndServe()
	}()
}

// Serve starts the resolver and serves until ctx is done, then shuts down
// (waiting up to 5s for queries in progress).
func (srv *Server) Serve(ctx context.Context) error {
	if err := srv.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// Shutdown stops the listeners and the health probe and waits for the
// queries in progress, until ctx is done.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	servers := srv.servers
	srv.servers = nil
	srv.mu.Unlock()
	var errs []error
	for _, ds := range servers {
		if err := ds.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	srv.fwd.close()
	done := make(chan struct{})
	go func() { srv.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	srv.cancel()
	return errors.Join(errs...)
}

// accept is the first classification, on the header alone (before the
// message is parsed): responses are dropped, other opcodes get NOTIMP,
// messages that are not one plain question get FORMERR.
func (srv *Server) accept(dh dns.Header) dns.MsgAcceptAction {
	a := dns.DefaultMsgAcceptFunc(dh)
	if a != dns.MsgAccept {
		srv.st.malformed.Add(1)
	}
	return a
}

// invalid counts what the miekg/dns server discards or answers FORMERR
// itself before the handler sees it: datagrams shorter than a header and
// messages that do not parse.
func (srv *Server) invalid([]byte, error) {
	srv.st.malformed.Add(1)
}

func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// bind opens n UDP sockets and one TCP listener on the same address and port.
// With port 0 the kernel picks the port of the first UDP socket; when that
// port is taken for TCP, another is tried.
func bind(a netip.AddrPort, n int) ([]net.PacketConn, net.Listener, netip.AddrPort, error) {
	lc := net.ListenConfig{Control: reusePort}
	// Plain TCP, not MPTCP (Go's default for listeners since 1.24 where the
	// kernel enables it): an MPTCP socket refuses SO_ATTACH_REUSEPORT_CBPF
	// with EOPNOTSUPP, and the handover could not steer TCP.
	lc.SetMultipathTCP(false)
	ctx := context.Background()
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		var pcs []net.PacketConn
		fail := func(err error) {
			for _, pc := range pcs {
				pc.Close()
			}
			lastErr = err
		}
		first, err := lc.ListenPacket(ctx, "udp", a.String())
		if err != nil {
			return nil, nil, a, fmt.Errorf("dnsproxy: listen udp %v: %w", a, err)
		}
		pcs = append(pcs, first)
		bound := netip.AddrPortFrom(a.Addr(), uint16(first.LocalAddr().(*net.UDPAddr).Port))
		ok := true
		for i := 1; i < n; i++ {
			pc, err := lc.ListenPacket(ctx, "udp", bound.String())
			if err != nil {
				fail(fmt.Errorf("dnsproxy: listen udp %v (socket %d): %w", bound, i+1, err))
				ok = false
				break
			}
			pcs = append(pcs, pc)
		}
		if !ok {
			if a.Port() != 0 {
				return nil, nil, a, lastErr
			}
			continue
		}
		ln, err := lc.Listen(ctx, "tcp", bound.String())
		if err != nil {
			fail(fmt.Errorf("dnsproxy: listen tcp %v: %w", bound, err))
			if a.Port() != 0 {
				return nil, nil, a, lastErr
			}
			continue
		}
		return pcs, ln, bound, nil
	}
	return nil, nil, a, lastErr
}

// wireWriter is an in-memory dns.ResponseWriter for handleWire.
type wireWriter struct {
	remote net.Addr
	out    *dns.Msg
}

func (w *wireWriter) LocalAddr() net.Addr       { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (w *wireWriter) RemoteAddr() net.Addr      { return w.remote }
func (w *wireWriter) WriteMsg(m *dns.Msg) error { w.out = m; return nil }
func (w *wireWriter) Write([]byte) (int, error) { return 0, errors.New("not supported") }
func (w *wireWriter) Close() error              { return nil }
func (w *wireWriter) TsigStatus() error         { return nil }
func (w *wireWriter) TsigTimersOnly(bool)       {}
func (w *wireWriter) Hijack()                   {}

// handleWire is the message path of the listeners for one raw query, as the
// miekg/dns server runs it (header check, parse, FORMERR on parse errors, the
// handler): the fuzz target. It returns the packed reply, or nil when the
// query is dropped.
func (srv *Server) handleWire(b []byte, client netip.AddrPort, tcp bool) []byte {
	if len(b) < 12 {
		srv.st.malformed.Add(1)
		return nil
	}
	dh := dns.Header{
		Id: binary.BigEndian.Uint16(b), Bits: binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]), Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]), Arcount: binary.BigEndian.Uint16(b[10:]),
	}
	var remote net.Addr = net.UDPAddrFromAddrPort(client)
	if tcp {
		remote = net.TCPAddrFromAddrPort(client)
	}
	w := &wireWriter{remote: remote}
	q := new(dns.Msg)
	switch action := srv.accept(dh); action {
	case dns.MsgAccept:
		if err := q.Unpack(b); err == nil {
			srv.ServeDNS(w, q)
			break
		}
		srv.st.malformed.Add(1)
		fallthrough
	case dns.MsgReject, dns.MsgRejectNotImplemented:
		r := new(dns.Msg)
		r.Id, r.Response, r.Opcode = dh.Id, true, int(dh.Bits>>11)&0xF
		r.Rcode = dns.RcodeFormatError
		if action == dns.MsgRejectNotImplemented {
			r.Rcode = dns.RcodeNotImplemented
		}
		w.out = r
	case dns.MsgIgnore:
		return nil
	}
	if w.out == nil {
		return nil
	}
	out, err := w.out.Pack()
	if err != nil {
		return nil
	}
	return out
}

// reuseGroup is our part of the SO_REUSEPORT groups of one listen address:
// its UDP sockets and its TCP listener.
type reuseGroup struct {
	udp []net.PacketConn
	tcp net.Listener
}

type syscallConn interface {
	SyscallConn() (syscall.RawConn, error)
}

func control(c any, fn func(fd int) error) error {
	sc, ok := c.(syscallConn)
	if !ok {
		return fmt.Errorf("dnsproxy: %T has no file descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// steerTo attaches to the group of c a classic BPF program that returns the
// socket index k: every new datagram (or connection) goes to the k-th socket
// of the group, or is spread by hash when the group has no k-th socket.
func steerTo(c any, k uint32) error {
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: k}}
	return control(c, func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
}

func (g reuseGroup) steer() error {
	var errs []error
	if len(g.udp) > 0 {
		errs = append(errs, steerTo(g.udp[0], uint32(len(g.udp))))
	}
	if g.tcp != nil {
		errs = append(errs, steerTo(g.tcp, 1))
	}
	return errors.Join(errs...)
}

func (g reuseGroup) unsteer() {
	detach := func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	}
	if len(g.udp) > 0 {
		_ = control(g.udp[0], detach) // ENOENT: nothing attached
	}
	if g.tcp != nil {
		_ = control(g.tcp, detach)
	}
}

// Handover hands the listen addresses over to a successor process that has
// bound the same addresses (SO_REUSEPORT) after this one, then shuts down,
// losing no query:
//
//  1. a reuseport steering program (classic BPF) is attached to every group:
//     it returns the index of the first socket after ours, which is the
//     successor's (sockets join a group in bind order; ours joined first,
//     or were compacted to the front when our own predecessor left). From
//     then on the kernel queues every new datagram and connection on the
//     successor's sockets; with no successor the index does not exist and
//     the kernel spreads by hash as before.
//  2. for settle, this process keeps serving what was queued on its sockets
//     before the program was attached (and TCP connections already accepted).
//  3. Shutdown: listeners close, queries in progress finish (until ctx).
//
// The successor detaches the program when it starts (Start), so a later
// handover starts from plain hashing again.
func (srv *Server) Handover(ctx context.Context, settle time.Duration) error {
	srv.mu.Lock()
	groups := srv.groups
	srv.mu.Unlock()
	var errs []error
	for _, g := range groups {
		if err := g.steer(); err != nil {
			errs = append(errs, fmt.Errorf("dnsproxy: handover: %w", err))
		}
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
	}
	errs = append(errs, srv.Shutdown(ctx))
	return errors.Join(errs...)
}
