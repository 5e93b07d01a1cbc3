package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// upstream is one forwarding target with its health.
type upstream struct {
	addr  string
	fails atomic.Int32 // consecutive failures
	down  atomic.Bool
	since atomic.Int64 // unix ns of the last change of down (0: up since start)
	pool  udpPool      // ready UDP sockets (forward_pool.go)
}

// forwarder sends queries to the upstreams with failover.
type forwarder struct {
	s         *settings
	ups       []*upstream
	st        *counters
	obs       *Observer
	dialer    net.Dialer
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var (
	errNoUpstream = errors.New("dnsproxy: every upstream failed")
	errMismatch   = errors.New("answer does not match the question")
)

func newForwarder(s *settings, st *counters, obs *Observer) *forwarder {
	f := &forwarder{s: s, st: st, obs: obs, stop: make(chan struct{})}
	for _, a := range s.upstreams {
		f.ups = append(f.ups, &upstream{addr: a})
	}
	return f
}

// start runs the periodic health probe.
func (f *forwarder) start() {
	if f.s.HealthInterval <= 0 {
		return
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(f.s.HealthInterval)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
				f.probeAll()
			}
		}
	}()
}

func (f *forwarder) close() {
	f.closeOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
	f.closePools()
}

// probeAll sends "." NS to every upstream; any valid answer marks it up, a
// failure counts like a failed exchange.
func (f *forwarder) probeAll() {
	var wg sync.WaitGroup
	for _, u := range f.ups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := new(dns.Msg)
			q.SetQuestion(".", dns.TypeNS)
			ctx, cancel := context.WithTimeout(context.Background(), f.s.Timeout)
			defer cancel()
			if _, err := f.exchangeProto(ctx, u, q, "udp"); err != nil {
				f.markFailed(u)
				return
			}
			f.markOK(u)
		}()
	}
	wg.Wait()
}

func (f *forwarder) markFailed(u *upstream) {
	if int(u.fails.Add(1)) >= f.s.MaxFails && !u.down.Swap(true) {
		f.healthChanged(u, false)
	}
}

func (f *forwarder) markOK(u *upstream) {
	u.fails.Store(0)
	if u.down.Swap(false) {
		f.healthChanged(u, true)
	}
}

// healthChanged records a transition of u (once per transition, whatever
// the number of queries that saw it) and reports it.
func (f *forwarder) healthChanged(u *upstream, up bool) {
	u.since.Store(time.Now().UnixNano())
	if f.obs.UpstreamHealth != nil {
		f.obs.UpstreamHealth(u.addr, up)
	}
}

// UpstreamState is the health of one upstream.
type UpstreamState struct {
	Addr string `json:"addr"`
	Up   bool   `json:"up"`
	// Since is the time of the last change (zero: up since the start).
	Since time.Time `json:"since,omitzero"`
}

// AllDownFor returns the addresses of ups when every one of them has been
// down for at least grace at now, else nil (an agent's readiness: lookups
// fail closed while no upstream answers).
func AllDownFor(ups []UpstreamState, now time.Time, grace time.Duration) []string {
	var addrs []string
	for _, u := range ups {
		if u.Up || now.Sub(u.Since) < grace {
			return nil
		}
		addrs = append(addrs, u.Addr)
	}
	return addrs
}

// Upstreams returns the health of every upstream, in configuration order: an
// upstream is down after MaxFails consecutive failed exchanges or health
// probes, up again after one success.
func (srv *Server) Upstreams() []UpstreamState {
	out := make([]UpstreamState, 0, len(srv.fwd.ups))
	for _, u := range srv.fwd.ups {
		st := UpstreamState{Addr: u.addr, Up: !u.down.Load()}
		if ns := u.since.Load(); ns != 0 {
			st.Since = time.Unix(0, ns)
		}
		out = append(out, st)
	}
	return out
}

// healthy reports the health of each upstream, in configuration order.
func (f *forwarder) healthy() map[string]bool {
	out := map[string]bool{}
	for _, u := range f.ups {
		out[u.addr] = !u.down.Load()
	}
	return out
}

// order returns the upstreams to try: healthy ones first, in configuration
// order, then those marked down (a last resort when every one is down).
func (f *forwarder) order() []*upstream {
	out := make([]*upstream, 0, len(f.ups))
	for _, u := range f.ups {
		if !u.down.Load() {
			out = append(out, u)
		}
	}
	for _, u := range f.ups {
		if u.down.Load() {
			out = append(out, u)
		}
	}
	return out
}

// forward resolves q (whose ID is replaced) with failover; the answer's ID is
// q's original ID.
func (f *forwarder) forward(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.s.QueryTimeout)
	defer cancel()
	var errs []error
	for _, u := range f.order() {
		if ctx.Err() != nil {
			break
		}
		r, err := f.exchange(ctx, u, q)
		if err == nil {
			f.markOK(u)
			return r, nil
		}
		f.markFailed(u)
		errs = append(errs, fmt.Errorf("%s: %w", u.addr, err))
	}
	if len(errs) == 0 {
		errs = append(errs, ctx.Err())
	}
	return nil, fmt.Errorf("%w: %w", errNoUpstream, errors.Join(errs...))
}

// exchange asks one upstream over UDP and retries over TCP when the answer is
// truncated.
func (f *forwarder) exchange(ctx context.Context, u *upstream, q *dns.Msg) (*dns.Msg, error) {
	r, err := f.exchangeProto(ctx, u, q, "udp")
	if err != nil || !r.Truncated {
		return r, err
	}
	f.st.upTCPRetries.Add(1)
	return f.exchangeProto(ctx, u, q, "tcp")
}

// exchangeProto sends q with a fresh random ID over a fresh socket (a new
// ephemeral source port per exchange; UDP ones dialed ahead, forward_pool.go)
// and waits for an answer that matches the question; others are dropped and
// counted.
func (f *forwarder) exchangeProto(ctx context.Context, u *upstream, q *dns.Msg, proto string) (r *dns.Msg, err error) {
	f.st.upQueries.Add(1)
	start := time.Now()
	defer func() {
		if err != nil {
			f.st.upErrors.Add(1)
		}
		if f.obs.Upstream != nil {
			f.obs.Upstream(u.addr, time.Since(start), err)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, f.s.Timeout)
	defer cancel()
	m := *q // shallow: only the header changes
	m.Id = uint16(rand.Uint32())
	m.Compress = true
	wire, err := m.Pack()
	if err != nil {
		return nil, err
	}
	var nc net.Conn
	if proto == "udp" {
		nc, err = f.udpConn(ctx, u) // unused, ready ahead; closed in the background
		if err == nil {
			defer f.releaseUDP(u, nc)
		}
	} else if nc, err = f.dialer.DialContext(ctx, proto, u.addr); err == nil {
		defer nc.Close()
	}
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	co := &dns.Conn{Conn: nc}
	if _, err := co.Write(wire); err != nil {
		return nil, err
	}
	for {
		var p []byte
		if proto == "udp" {
			bp := udpBufs.Get().(*[]byte)
			n, err := nc.Read(*bp)
			if err != nil {
				udpBufs.Put(bp)
				return nil, err
			}
			p = append([]byte(nil), (*bp)[:n]...)
			udpBufs.Put(bp)
		} else if p, err = co.ReadMsgHeader(nil); err != nil {
			return nil, err
		}
		r := new(dns.Msg)
		err := r.Unpack(p)
		if err == nil {
			err = matches(&m, r)
		}
		if err != nil {
			f.st.upMismatches.Add(1)
			if proto == "tcp" {
				return nil, err // a TCP stream carrying a wrong answer is not trusted
			}
			continue // not our answer (spoofed, late or garbage): keep waiting
		}
		r.Id = q.Id
		return r, nil
	}
}

var udpBufs = sync.Pool{New: func() any { b := make([]byte, 65535); return &b }}

// matches validates an answer against the query: response bit, ID, and the
// one question (name case-insensitively, type, class).
func matches(q, r *dns.Msg) error {
	switch {
	case !r.Response:
		return fmt.Errorf("%w: not a response", errMismatch)
	case r.Id != q.Id:
		return fmt.Errorf("%w: ID %d, want %d", errMismatch, r.Id, q.Id)
	case r.Opcode != q.Opcode:
		return fmt.Errorf("%w: opcode %d", errMismatch, r.Opcode)
	case len(r.Question) != 1:
		// An answer without question (FORMERR of some servers) cannot be checked.
		return fmt.Errorf("%w: %d questions", errMismatch, len(r.Question))
	}
	a, b := r.Question[0], q.Question[0]
	if a.Qtype != b.Qtype || a.Qclass != b.Qclass || !strings.EqualFold(a.Name, b.Name) {
		return fmt.Errorf("%w: question %s %s %s, want %s %s %s", errMismatch,
			a.Name, dns.Class(a.Qclass), dns.Type(a.Qtype), b.Name, dns.Class(b.Qclass), dns.Type(b.Qtype))
	}
	return nil
}
