package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
	"github.com/egressd/egressd/policy"
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

// handle runs the chain and returns the reply (nil: drop the query).
func (srv *Server) handle(ctx context.Context, req *request) *dns.Msg {
	if !req.charged && !srv.rl.allow(req.client, srv.now()) {
		srv.st.rateLimited.Add(1)
		req.result = ResultRefused
		return srv.refused(req)
	}
	if n := srv.inflight.Add(1); n > int64(srv.s.maxInflight) && srv.s.maxInflight > 0 {
		srv.inflight.Add(-1)
		srv.st.overloaded.Add(1)
		req.result = ResultRefused
		return srv.refused(req)
	}
	defer srv.inflight.Add(-1)
	if err := srv.inflightPer.acquire(req.client, max(srv.s.MaxInflightPerClient, 0), 0); err != nil {
		srv.st.clientOverloaded.Add(1)
		req.result = ResultRefused
		return srv.refused(req)
	}
	defer srv.inflightPer.release(req.client)

	// classify
	if reply, drop := srv.classify(req); reply != nil || drop {
		req.result = ResultRefused
		return reply
	}
	question := req.q.Question[0]

	// decide
	var wl *policy.Workload
	var rules []policy.RuleRef
	var decision policy.LookupDecision
	if eng := srv.deps.Engine; eng != nil {
		var refused *dns.Msg
		if wl, refused = srv.clientWorkload(ctx, req); refused != nil { // unknown.go
			return refused
		}
		if wl != nil {
			decision = eng.DecideLookup(wl.Key(), question.Name)
			if decision.Blocked() {
				req.result = ResultBlocked
				return srv.blocked(ctx, req, wl, decision)
			}
			if a := decision.Audit; a != nil && a.Verdict == policy.Deny {
				srv.st.audited.Add(1)
				req.result = ResultAudit
				srv.deps.Reporter.LookupAudit(ctx, srv.event(req, wl, EventLookupAudit, *a, "NOERROR"))
			}
			rules = eng.FQDNRules(wl.Key(), question.Name)
		}
	}

	if m := srv.tunnelRefused(ctx, req, wl); m != nil {
		req.result = ResultTunnel
		return m
	}

	// answer
	reply, err := srv.resolve(ctx, req)
	if err != nil {
		srv.st.servFail.Add(1)
		req.result = ResultError
		return srv.failure(req, dns.ExtendedErrorCodeNoReachableAuthority, "egressd: no upstream answered")
	}
	srv.tunnelObserve(ctx, req, wl, reply)

	// decide the rest of the answer's alias chain: a CNAME or DNAME into a
	// name a Deny rule matches blocks the lookup (chain.go)
	var links []string
	if wl != nil && chain.HasAlias(reply.Answer) {
		links = chain.Of(reply).Links
		if len(links) > 0 {
			cd := srv.deps.Engine.DecideChain(decision, links)
			if cd.Blocked() {
				req.result = ResultBlocked
				return srv.blocked(ctx, req, wl, cd)
			}
			if cd.AuditVia != "" {
				srv.st.audited.Add(1)
				req.result = ResultAudit
				ev := srv.event(req, wl, EventLookupAudit, *cd.Audit, "NOERROR")
				ev.CNAME = cd.AuditVia
				srv.deps.Reporter.LookupAudit(ctx, ev)
			}
		}
	}

	// drop the addresses of rebinding ranges (rebind.go), for every client
	srv.rebindProtect(ctx, req, wl, reply)

	// program
	if wl != nil {
		if err := srv.program(ctx, req, wl, rules, reply, links); err != nil {
			srv.st.servFail.Add(1)
			req.result = ResultError
			return srv.failure(req, dns.ExtendedErrorCodeOther, programFailureText(err)) // limits.go
		}
		srv.deps.Reporter.LookupAllowed(ctx, srv.event(req, wl, EventLookupAllowed, decision.Outcome, dns.RcodeToString[reply.Rcode]))
	}
	return reply
}

// refused is the REFUSED reply of a query over a limit; responses get none.
func (srv *Server) refused(req *request) *dns.Msg {
	if req.q.Response {
		return nil
	}
	return srv.rcode(req, dns.RcodeRefused)
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

// classify rejects what the resolver does not serve. It returns a reply, or
// drop=true for queries that get none.
func (srv *Server) classify(req *request) (reply *dns.Msg, drop bool) {
	q := req.q
	switch {
	case q.Response:
		srv.st.malformed.Add(1)
		return nil, true
	case q.Opcode != dns.OpcodeQuery:
		srv.st.malformed.Add(1)
		return srv.rcode(req, dns.RcodeNotImplemented), false
	case len(q.Question) != 1 || len(q.Answer) > 0 || len(q.Ns) > 0:
		srv.st.malformed.Add(1)
		return srv.rcode(req, dns.RcodeFormatError), false
	}
	req.opt = q.IsEdns0()
	if req.opt != nil && !singleRootOPT(q) {
		// RFC 6891 6.1.1: one OPT record at most, owned by the root.
		srv.st.malformed.Add(1)
		return srv.rcode(req, dns.RcodeFormatError), false
	}
	if req.opt != nil && req.opt.Version() != 0 {
		srv.st.malformed.Add(1)
		r := srv.rcode(req, dns.RcodeBadVers)
		return r, false
	}
	switch qt := q.Question[0]; {
	case qt.Qclass != dns.ClassINET:
		srv.st.malformed.Add(1)
		return srv.rcode(req, dns.RcodeRefused), false
	case qt.Qtype == dns.TypeAXFR || qt.Qtype == dns.TypeIXFR || qt.Qtype == dns.TypeOPT:
		srv.st.malformed.Add(1)
		return srv.rcode(req, dns.RcodeRefused), false
	}
	return nil, false
}

// singleRootOPT reports whether the additional section of q holds one OPT
// record, owned by the root name.
func singleRootOPT(q *dns.Msg) bool {
	n := 0
	for _, rr := range q.Extra {
		if h := rr.Header(); h.Rrtype == dns.TypeOPT {
			if n++; n > 1 || h.Name != "." {
				return false
			}
		}
	}
	return n == 1
}

// resolve answers from the cache or the upstreams. Identical queries in flight
// share one upstream exchange. The returned message is the caller's own.
func (srv *Server) resolve(ctx context.Context, req *request) (*dns.Msg, error) {
	q := req.q
	do := req.opt != nil && req.opt.Do()
	key := cacheKey(q.Question[0], q.RecursionDesired, q.CheckingDisabled, do)
	now := srv.now()
	cached, fresh, ok := srv.cache.get(key, now)
	if ok && fresh {
		srv.st.cacheHits.Add(1)
		if srv.deps.Observer.CacheHit != nil {
			srv.deps.Observer.CacheHit()
		}
		return srv.reply(req, cached), nil
	}
	srv.st.cacheMisses.Add(1)
	v, err, shared := srv.flight.Do(key, func() (any, error) {
		up := new(dns.Msg)
		up.Id = q.Id
		up.Opcode = dns.OpcodeQuery
		up.RecursionDesired = q.RecursionDesired
		up.CheckingDisabled = q.CheckingDisabled
		up.Question = []dns.Question{q.Question[0]}
		up.SetEdns0(srv.s.UpstreamUDPSize, do)
		// Detached from the first caller: its cancellation must not fail the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), srv.s.QueryTimeout)
		defer cancel()
		r, err := srv.fwd.forward(fctx, up)
		if err != nil {
			return nil, err
		}
		if n := scrubAnswer(r); n > 0 { // program.go
			srv.st.scrubbed.Add(uint64(n))
		}
		if !srv.s.KeepECH {
			stripECH(r) // ech.go
		}
		minimize(r, do)            // sections.go
		srv.capAnswer(ctx, req, r) // limits.go
		return srv.cache.put(key, r, srv.now()), nil
	})
	if shared {
		srv.st.coalesced.Add(1)
	}
	if err != nil {
		if ok { // expired but inside the serve-stale window
			srv.st.staleServed.Add(1)
			return srv.reply(req, cached), nil
		}
		return nil, err
	}
	return srv.reply(req, copyWithTTL(v.(*dns.Msg), func(t uint32) uint32 { return t })), nil
}

// reply turns an answer (the caller's own copy) into the reply to req.
func (srv *Server) reply(req *request, m *dns.Msg) *dns.Msg {
	m.Id = req.q.Id
	m.Response = true
	m.Opcode = dns.OpcodeQuery
	m.RecursionDesired = req.q.RecursionDesired
	m.RecursionAvailable = true
	m.CheckingDisabled = req.q.CheckingDisabled
	m.Truncated = false
	m.Question = []dns.Question{req.q.Question[0]} // the client's spelling
	return m
}

// rcode is an empty reply with a response code.
func (srv *Server) rcode(req *request, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req.q, rcode)
	m.RecursionAvailable = true
	if len(req.q.Question) > 1 {
		m.Question = nil
	}
	return m
}

// failure is a SERVFAIL with an Extended DNS Error when the client sent EDNS0.
func (srv *Server) failure(req *request, code uint16, text string) *dns.Msg {
	m := srv.rcode(req, dns.RcodeServerFailure)
	srv.addEDE(req, m, code, text)
	return m
}

// addEDE attaches an Extended DNS Error (RFC 8914) when the client sent EDNS0.
func (srv *Server) addEDE(req *request, m *dns.Msg, code uint16, text string) {
	if req.opt == nil {
		return
	}
	o := srv.replyOPT(req, m)
	o.Option = append(o.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
}

// replyOPT returns the OPT record of the reply, adding it when missing.
func (srv *Server) replyOPT(req *request, m *dns.Msg) *dns.OPT {
	if o := m.IsEdns0(); o != nil {
		return o
	}
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(srv.s.MaxUDPSize)
	if req.opt != nil && req.opt.Do() {
		o.SetDo()
	}
	m.Extra = append(m.Extra, o)
	return o
}

// fit adds the OPT record for EDNS0 clients and truncates the reply to the
// client's buffer size: its advertised size (512 without EDNS0), capped by
// MaxUDPSize, over UDP; 65535 over TCP.
func (srv *Server) fit(req *request, m *dns.Msg) {
	m.Compress = true
	size := dns.MinMsgSize
	if req.opt != nil {
		srv.replyOPT(req, m)
		size = int(min(max(req.opt.UDPSize(), dns.MinMsgSize), srv.s.MaxUDPSize))
	}
	if req.tcp {
		size = dns.MaxMsgSize
	}
	if m.Len() > size {
		m.Truncate(size)
		if m.Truncated {
			srv.st.truncated.Add(1)
		}
	}
}

// blocked answers a lookup an enforced policy refuses.
func (srv *Server) blocked(ctx context.Context, req *request, wl *policy.Workload, d policy.LookupDecision) *dns.Msg {
	srv.st.blocked.Add(1)
	q := req.q.Question[0]
	m := new(dns.Msg)
	m.SetReply(req.q)
	m.RecursionAvailable = true
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: srv.s.blocked}
	switch srv.s.BlockMode {
	case BlockRefused:
		m.Rcode = dns.RcodeRefused
	case BlockSinkhole:
		switch q.Qtype {
		case dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = []dns.RR{&dns.A{Hdr: hdr, A: srv.s.SinkholeIPv4.AsSlice()}}
		case dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: srv.s.SinkholeIPv6.AsSlice()}}
		}
	default:
		m.Rcode = dns.RcodeNameError
	}
	srv.addEDE(req, m, dns.ExtendedErrorCodeBlocked, blockedText(d))
	ev := srv.event(req, wl, EventLookupBlocked, d.Outcome, dns.RcodeToString[m.Rcode])
	ev.CNAME = d.Via
	srv.deps.Reporter.LookupBlocked(ctx, ev)
	return m
}

// blockedText is the EDE text of a blocked lookup: "egressd: blocked by
// Kind/name#rule", or the policy and the reason when no rule decided; a
// lookup blocked by a name of its alias chain adds "(via <name>)".
func blockedText(d policy.LookupDecision) string {
	o := d.Outcome
	var s string
	switch {
	case o.Policy.Name != "" && o.Rule != "":
		s = "egressd: blocked by " + policy.RuleRef{Policy: o.Policy, Rule: o.Rule}.String()
	case o.Policy.Name != "":
		s = "egressd: blocked by " + o.Policy.String() + " (" + o.Reason + ")"
	default:
		s = "egressd: blocked (" + o.Reason + ")"
	}
	if d.Via != "" {
		s += " (via " + truncateName(d.Via) + ")"
	}
	return s
}

// truncateName keeps names in texts short (a DNS name is at most 255 bytes
// on the wire, longer in presentation format with escapes).
func truncateName(n string) string {
	if len(n) > 200 {
		return n[:200] + "..."
	}
	return n
}

// event builds the report of a lookup.
func (srv *Server) event(req *request, wl *policy.Workload, name string, o policy.Outcome, response string) Event {
	q := req.q.Question[0]
	ev := Event{
		Time: req.start, Event: name, Client: req.client.String(), ClientPort: req.port, TCP: req.tcp,
		QName: q.Name, QType: dns.Type(q.Qtype).String(),
		Rule: o.Rule, Tier: string(o.Tier), Reason: o.Reason, Response: response,
	}
	if wl != nil {
		ev.Workload = wl.Key().String()
	}
	if o.Policy.Name != "" {
		ev.Policy = o.Policy.String()
	}
	return ev
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
