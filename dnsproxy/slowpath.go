package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/telemetry/event"
)

// request is one query on its way through the chain.
type request struct {
	start  time.Time
	client netip.Addr
	port   uint16 // the client's port (0: unknown)
	tcp    bool
	// charged: the client's rate limit token was taken already (UDP queries
	// on the resolver's own sockets, in the read loop: fastpath.go)
	charged bool
	q       *dns.Msg
	opt     *dns.OPT // the client's OPT record; nil without EDNS0
	result  string   // Result* (Observer.Result); empty: ResultAllowed
}

// ServeDNS implements dns.Handler: classify → decide → answer → program, then
// the reply, fitted to the client's buffer size. It is safe for concurrent use.
func (srv *Server) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	req := request{start: time.Now(), client: addrOf(w.RemoteAddr()), q: q}
	_, req.tcp = w.RemoteAddr().(*net.TCPAddr)
	own := !req.tcp && srv.ownSocket(w.LocalAddr())
	req.charged = own
	req.port = portOf(w.RemoteAddr())
	srv.st.queries.Add(1)
	reply := srv.handle(srv.ctx, &req)
	rcode := -1
	if reply != nil && own && len(q.Question) == 1 {
		switch srv.rrl.check(req.client, q.Question[0].Name, q.Question[0].Qtype, reply.Rcode, srv.now()) {
		case rrlTruncate:
			srv.st.rrlTruncated.Add(1)
			reply = srv.rcode(&req, reply.Rcode)
			reply.Truncated = true
			req.result = ResultRefused
		case rrlDrop:
			srv.st.rrlDropped.Add(1)
			reply = nil
			req.result = ResultRefused
		}
	}
	if reply != nil {
		srv.fit(&req, reply)
		rcode = reply.Rcode
		if err := w.WriteMsg(reply); err != nil {
			rcode = -1
		}
	}
	if srv.deps.Observer.Query != nil {
		srv.deps.Observer.Query(time.Since(req.start), rcode)
	}
	if srv.deps.Observer.Result != nil {
		if req.result == "" {
			req.result = ResultAllowed
		}
		srv.deps.Observer.Result(req.result)
	}
}

// handle runs the chain and returns the reply (nil: drop the query). It
// reads top to bottom: the limits, classify, decide, resolve, decide the
// answer's chain, program, report.
func (srv *Server) handle(ctx context.Context, req *request) *dns.Msg {
	if srv.overLimit(req) { // ratelimit.go, tcplimit.go
		req.result = ResultRefused
		return srv.refused(req)
	}
	defer srv.releaseInflight(req)

	// 1. classify: what the resolver does not serve (classify.go)
	if reply, drop := srv.classify(req); reply != nil || drop {
		req.result = ResultRefused
		return reply
	}

	// 2. decide: who asks, may it ask; tunnel quarantine (tunnelhook.go)
	lk, refused := srv.decide(ctx, req)
	if refused != nil {
		return refused
	}
	if m := srv.tunnelRefused(ctx, req, lk.wl); m != nil {
		req.result = ResultTunnel
		return m
	}

	// 3. resolve: the cache or the upstreams (resolve.go)
	reply, err := srv.resolve(ctx, req)
	if err != nil {
		srv.st.servFail.Add(1)
		req.result = ResultError
		return srv.failure(req, dns.ExtendedErrorCodeNoReachableAuthority, "egressd: no upstream answered")
	}
	srv.tunnelObserve(ctx, req, lk.wl, reply)

	// 4. decide the answer's chain: a CNAME or DNAME into a name a Deny rule
	// matches blocks the lookup (lookup.go); then drop the addresses of
	// rebinding ranges, for every client (rebind.go)
	srv.decideChain(&lk, reply)
	if lk.decision.Blocked() {
		req.result = ResultBlocked
		return srv.blocked(ctx, req, lk.wl, lk.decision)
	}
	if lk.decision.AuditVia != "" { // a link, not the question, would deny
		srv.reportAudit(ctx, req, &lk)
	}
	srv.rebindProtect(ctx, req, lk.wl, reply)

	// 5. program: the answer's addresses into the kernel sets (program.go)
	if lk.wl == nil {
		return reply
	}
	if err := srv.program(ctx, req, &lk, reply); err != nil {
		srv.st.servFail.Add(1)
		req.result = ResultError
		return srv.failure(req, dns.ExtendedErrorCodeOther, programFailureText(err)) // limits.go
	}

	// 6. report
	srv.deps.Events.Emit(ctx, srv.event(req, lk.wl, event.LookupAllowed, lk.decision.Outcome, dns.RcodeToString[reply.Rcode]))
	return reply
}

// overLimit takes the client's rate limit token (unless the read loop took
// it) and a place among the queries in flight, in all and of the client. It
// reports whether a limit refuses the query; otherwise releaseInflight gives
// the places back.
func (srv *Server) overLimit(req *request) bool {
	if !req.charged && !srv.rl.allow(req.client, srv.now()) {
		srv.st.rateLimited.Add(1)
		return true
	}
	if n := srv.inflight.Add(1); n > int64(srv.s.maxInflight) && srv.s.maxInflight > 0 {
		srv.inflight.Add(-1)
		srv.st.overloaded.Add(1)
		return true
	}
	if err := srv.inflightPer.acquire(req.client, max(srv.s.MaxInflightPerClient, 0), 0); err != nil {
		srv.inflight.Add(-1)
		srv.st.clientOverloaded.Add(1)
		return true
	}
	return false
}

// releaseInflight gives back the places overLimit took.
func (srv *Server) releaseInflight(req *request) {
	srv.inflightPer.release(req.client)
	srv.inflight.Add(-1)
}

// decide finds the client's workload (unknown.go) and decides its lookup of
// the question (lookup.go). A lookup an enforced policy blocks gets its
// reply (refused); an Audit-mode deny is reported and answered.
func (srv *Server) decide(ctx context.Context, req *request) (lk lookup, refused *dns.Msg) {
	if srv.deps.Engine == nil {
		return lookup{}, nil
	}
	wl, refused := srv.clientWorkload(ctx, req)
	if wl == nil {
		return lookup{}, refused
	}
	lk = srv.decideLookup(wl, req.q.Question[0].Name)
	if lk.decision.Blocked() {
		req.result = ResultBlocked
		return lk, srv.blocked(ctx, req, wl, lk.decision)
	}
	if lk.decision.Audit != nil {
		srv.reportAudit(ctx, req, &lk)
	}
	return lk, nil
}

// reportAudit reports the Audit-mode deny of a lookup that is answered
// (dns.lookup.audit; CNAME: the alias chain link that would deny).
func (srv *Server) reportAudit(ctx context.Context, req *request, lk *lookup) {
	a := auditDenied(lk.decision)
	if a == nil {
		return
	}
	srv.st.audited.Add(1)
	req.result = ResultAudit
	ev := srv.event(req, lk.wl, event.LookupAudit, *a, "NOERROR")
	ev.CNAME = lk.decision.AuditVia
	srv.deps.Events.Emit(ctx, ev)
}

// ownSocket reports whether a UDP query came in on one of the resolver's own
// sockets, whose read loop took the client's rate limit token already.
func (srv *Server) ownSocket(local net.Addr) bool {
	ua, ok := local.(*net.UDPAddr)
	if !ok {
		return false
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	for _, a := range srv.own {
		if a == ap {
			return true
		}
	}
	return false
}

// addrOf returns the IP of a client address (unmapped).
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// portOf returns the port of a client address (0 when it has none).
func portOf(a net.Addr) uint16 {
	switch a := a.(type) {
	case *net.UDPAddr:
		return uint16(a.Port)
	case *net.TCPAddr:
		return uint16(a.Port)
	}
	return 0
}

var _ dns.Handler = (*Server)(nil)
