package dnsproxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/telemetry/event"
)

// The UDP fast path answers fresh cache hits at the wire level, in the read
// loop of each socket: parse the question from the raw query, find the packed
// reply of the cache entry, patch ID, question spelling and TTLs in place and
// write it with one syscall — no dns.Msg unpack/pack, no goroutine. Policy is
// decided for every query, as on the slow path (decisions cached per
// workload, answer and store generation), and the kernel sets are written
// when the pairs of this answer were not written recently enough for the
// reply's TTL. Everything else (misses, stale answers, blocked lookups,
// replies that need truncation, unusual queries, failed set writes) goes on
// to the miekg/dns server and ServeDNS unchanged.

// fastReader is the dns.Reader of one UDP socket: it loops over the socket
// answering what the fast path can and hands the rest to the server.
type fastReader struct {
	dns.Reader
	srv      *Server
	buf, out []byte
	key      []byte
	direct   int8 // 1: write without the OOB source fix-up (bound to one address); -1: with; 0: unknown
}

// decorateReader is the dns.Server hook of the UDP listeners.
func (srv *Server) decorateReader(r dns.Reader) dns.Reader {
	return &fastReader{Reader: r, srv: srv, buf: make([]byte, 4096), out: make([]byte, 0, 4096), key: make([]byte, 0, 264)}
}

func (r *fastReader) ReadUDP(conn *net.UDPConn, _ time.Duration) ([]byte, *dns.SessionUDP, error) {
	// No read deadline: Shutdown unblocks the read with its own deadline.
	for {
		n, sess, err := dns.ReadFromSessionUDP(conn, r.buf)
		if err != nil {
			return nil, nil, err
		}
		if n >= 12 && (r.limited(conn, r.buf[:n], sess) || r.serve(conn, r.buf[:n], sess)) {
			continue
		}
		m := make([]byte, n)
		copy(m, r.buf[:n])
		return m, sess, nil
	}
}

// fastHit is a query the fast path is answering: a plain query with a fresh
// cache entry whose packed reply is spelled as the query, its client, and
// what was decided for it.
type fastHit struct {
	q      query
	e      *cacheEntry
	wf     *wireForm
	now    time.Time
	age    uint32 // seconds since the entry was stored
	ua     *net.UDPAddr
	client netip.Addr
	// wl is the client's workload and rec its lookup; nil: served without
	// policy (no engine, or an unknown client ServeUnknown lets through).
	wl  *policy.Workload
	rec *wlRecord
	// minAddr is the shortest TTL left of the answer's addresses; clamp
	// says whether the reply's TTLs are clamped to it and the kernel sets
	// written (a workload with FQDN rules, an answer with addresses).
	minAddr uint32
	clamp   bool
}

// serve answers b from the cache when it can; false leaves it to the server.
// It reads top to bottom as the slow path (slowpath.go) does: classify,
// decide, resolve (the packed cache entry), program, report.
func (r *fastReader) serve(conn *net.UDPConn, b []byte, sess *dns.SessionUDP) bool {
	srv := r.srv
	start := time.Now()

	// 1. classify: a plain query, a fresh cache entry spelled as asked
	h, ok := r.hit(b, sess)
	if !ok {
		return false
	}

	// 2. decide: the workload's lookup (the answer's chain included),
	// unknown clients, the tunnel quarantine
	if !srv.fastDecide(&h) {
		return false
	}

	// 3. resolve: the packed answer patched for this client
	out, ok := r.patch(&h)
	if !ok {
		return false // truncation: the slow path does it
	}
	rcode := int(out[3] & 0xF)
	if r.rrlLimited(conn, sess, &h, out, rcode, start) {
		return true
	}

	// 4. program: only when the entries written for this answer and
	// workload would expire too early for this reply
	if h.clamp && srv.programDue(&h) && !srv.fastProgram(&h) {
		return false // the slow path writes again and answers SERVFAIL on failure
	}

	// 5. report (before the reply, as the slow path does) and reply
	srv.fastReport(&h, rcode, len(out), start)
	err := r.reply(conn, out, h.ua, sess)
	srv.fastObserved(&h, rcode, err, start)
	return true
}

// hit parses a plain query (parseQuery) and finds its fresh cache entry
// with a packed reply spelled as the query and free of rebinding addresses.
func (r *fastReader) hit(b []byte, sess *dns.SessionUDP) (h fastHit, ok bool) {
	srv := r.srv
	q, key, ok := parseQuery(b, r.key[:0])
	r.key = key
	if !ok {
		return h, false
	}
	h.q, h.now = q, srv.now()
	if h.e = srv.cache.fresh(key, h.now); h.e == nil || len(h.e.msg.Question) != 1 {
		return h, false
	}
	if h.wf = h.e.wireOf(key); h.wf == nil {
		return h, false
	}
	// Records of the packed answer may point into the question (name
	// compression): only a query spelled as stored gets the packed answer
	// unchanged (mixed-case spellings, as 0x20 randomisation, take the slow path).
	if !bytes.Equal(b[12:q.qend-4], h.wf.b[12:h.wf.qend-4]) {
		return h, false
	}
	if srv.rebindHit(h.wf) {
		return h, false // rebinding protection filters and reports on the slow path
	}
	if h.ua, _ = sess.RemoteAddr().(*net.UDPAddr); h.ua == nil {
		return h, false
	}
	h.client = addrOf(h.ua)
	h.age = uint32(h.now.Sub(h.e.stored) / time.Second)
	return h, true
}

// fastDecide finds the client's workload and its lookup of the entry's name
// (both cached per store generation). false leaves the query to the slow
// path: a blocked lookup, a client that is no workload and not served
// without policy (the slow path waits for the store or refuses), a
// quarantined tunnel pair (the slow path refuses).
func (srv *Server) fastDecide(h *fastHit) bool {
	if eng := srv.deps.Engine; eng != nil {
		gen := eng.Store().Generation()
		if h.wl = srv.workloadOf(h.client, gen); h.wl != nil {
			if h.rec = srv.record(h.e, h.wl, gen); h.rec.decision.Blocked() {
				return false
			}
		} else if !srv.unknown.served(h.client, h.now) {
			return false
		}
	}
	// DNS tunnel detection sees every query.
	if srv.deps.Tunnel != nil {
		if blocked, _ := srv.deps.Tunnel.Blocked(tunnelKey(h.wlName(), h.client), h.wf.name); blocked {
			return false
		}
	}
	return true
}

// wlName is the workload's "namespace/name", empty for a client that is none.
func (h *fastHit) wlName() string {
	if h.wl == nil {
		return ""
	}
	return h.rec.wlName
}

// patch returns the packed answer with the client's ID, TTLs decremented by
// age (and, for a workload, clamped to the shortest address TTL, as program
// does) and an OPT record for an EDNS0 client, built in r.out. ok=false: the
// reply is larger than the client's buffer.
func (r *fastReader) patch(h *fastHit) (out []byte, ok bool) {
	srv, wf := r.srv, h.wf
	out = append(r.out[:0], wf.b...)
	binary.BigEndian.PutUint16(out, h.q.id)
	h.minAddr = ^uint32(0)
	for _, a := range wf.addrs {
		t := wf.ttls[a.slot].ttl
		h.minAddr = min(h.minAddr, t-min(h.age, t))
	}
	h.clamp = h.wl != nil && len(h.rec.rules) > 0 && len(wf.addrs) > 0 && srv.deps.Sets != nil
	for _, s := range wf.ttls {
		t := s.ttl - min(h.age, s.ttl)
		if h.clamp && s.answer {
			t = min(t, h.minAddr)
		}
		binary.BigEndian.PutUint32(out[s.off:], t)
	}
	size := dns.MinMsgSize
	if h.q.edns {
		out = append(out, 0, 0, byte(dns.TypeOPT), 0, 0, 0, 0, 0, 0, 0, 0)
		o := out[len(out)-11:]
		binary.BigEndian.PutUint16(o[3:], srv.s.MaxUDPSize)
		if h.q.do {
			o[7] = 0x80
		}
		binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
		size = int(min(max(h.q.udpSize, dns.MinMsgSize), srv.s.MaxUDPSize))
	}
	r.out = out
	return out, len(out) <= size
}

// rrlLimited applies response rate limiting to the reply out: true when the
// query was answered empty with TC or dropped here.
func (r *fastReader) rrlLimited(conn *net.UDPConn, sess *dns.SessionUDP, h *fastHit, out []byte, rcode int, start time.Time) bool {
	srv := r.srv
	switch srv.rrl.check(h.client, h.wf.name, h.q.qtype, rcode, h.now) {
	case rrlTruncate:
		srv.st.rrlTruncated.Add(1)
		out = out[:h.wf.qend]
		out[2] |= 0x02 // TC
		clear(out[6:12])
		r.reply(conn, out, h.ua, sess)
		srv.observeRefused(start, rcode)
		return true
	case rrlDrop:
		srv.st.rrlDropped.Add(1)
		srv.observeRefused(start, -1)
		return true
	}
	return false
}

// programDue reports whether the entries written for this answer and
// workload would expire before the reply's TTL plus half the grace.
func (srv *Server) programDue(h *fastHit) bool {
	need := time.Duration(max(h.minAddr, srv.s.minSetTTL)+srv.s.grace/2) * time.Second
	h.e.mu.Lock()
	until := h.rec.until
	h.e.mu.Unlock()
	return until.Before(h.now.Add(need))
}

// fastProgram writes the pairs of the answer for the workload through the
// same admission and set operations as program (admitAnswer, writeAnswer)
// and notes until when they last. false: a bound refused an address or the
// write failed; the slow path then removes the address from the reply and
// reports it, or writes again and counts its own write.
func (srv *Server) fastProgram(h *fastHit) bool {
	rec := h.rec
	srcs := sourcesOf(h.wl)
	addrs := make([]answerAddr, len(h.wf.addrs))
	for i, a := range h.wf.addrs {
		t := h.wf.ttls[a.slot].ttl
		addrs[i] = answerAddr{a.ip, t - min(h.age, t)}
	}
	admitted, grant, err := srv.admitAnswer(srv.ctx, nil, h.wl, rec.rules, srcs, rec.name, rec.links, addrs, nil)
	if err != nil || len(admitted) != len(addrs) {
		srv.track.undo(grant)
		return false
	}
	if _, err := srv.writeAnswer(srv.ctx, h.wl, rec.rules, srcs, rec.name, addrs, grant); err != nil {
		return false
	}
	minTimeout := ^uint32(0)
	for _, a := range addrs {
		if len(srcs[family(a.ip)]) > 0 {
			minTimeout = min(minTimeout, srv.s.setTimeout(a.ttl))
		}
	}
	if minTimeout == ^uint32(0) {
		minTimeout = 1 << 30 // nothing to write for this workload's families
	}
	h.e.mu.Lock()
	rec.until = h.now.Add(time.Duration(minTimeout) * time.Second)
	h.e.mu.Unlock()
	return true
}

// fastReport counts an answered query and reports it to tunnel detection and
// as the lookup's events, as the slow path does.
func (srv *Server) fastReport(h *fastHit, rcode, size int, start time.Time) {
	srv.st.queries.Add(1)
	srv.st.cacheHits.Add(1)
	srv.fast.hits.Add(1)
	if h.wl == nil && srv.deps.Engine != nil {
		srv.st.unknownServed.Add(1)
	}
	if srv.deps.Tunnel != nil {
		srv.fastObserve(h.wl, h.wlName(), h.client, h.wf.name, h.q.qtype, rcode, size, start)
	}
	if h.wl != nil {
		srv.fastEvents(h.wl, h.rec, h.client, h.wf.name, h.q.qtype, rcode, start)
	}
}

// fastObserved tells the Observer about an answered query.
func (srv *Server) fastObserved(h *fastHit, rcode int, err error, start time.Time) {
	if srv.deps.Observer.Query != nil {
		if err != nil {
			rcode = -1
		}
		srv.deps.Observer.Query(time.Since(start), rcode)
	}
	if srv.deps.Observer.CacheHit != nil {
		srv.deps.Observer.CacheHit()
	}
	if srv.deps.Observer.Result != nil {
		res := ResultAllowed
		if h.wl != nil && auditDenied(h.rec.decision) != nil {
			res = ResultAudit
		}
		srv.deps.Observer.Result(res)
	}
}

// reply writes a packed reply to the client of sess.
func (r *fastReader) reply(conn *net.UDPConn, out []byte, ua *net.UDPAddr, sess *dns.SessionUDP) error {
	if r.direct == 0 {
		r.direct = -1
		if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && !la.IP.IsUnspecified() {
			r.direct = 1
		}
	}
	var err error
	if r.direct > 0 {
		_, err = conn.WriteToUDP(out, ua)
	} else {
		_, err = dns.WriteToSessionUDP(conn, out, sess)
	}
	return err
}

// limited takes the client's rate limit token for every UDP packet that
// reaches a socket (ServeDNS does not take another). Over the rate, the
// packet is answered here, from its raw bytes: REFUSED with the question
// when it has one plain question, without it otherwise; responses get
// nothing. What a client over its rate costs is one read and at most one
// write: no parse, no goroutine, no cache or policy lookup.
func (r *fastReader) limited(conn *net.UDPConn, b []byte, sess *dns.SessionUDP) bool {
	srv := r.srv
	if srv.rl == nil {
		return false
	}
	ua, _ := sess.RemoteAddr().(*net.UDPAddr)
	if ua == nil {
		return false
	}
	client := addrOf(ua)
	if srv.rl.allow(client, srv.now()) {
		return false
	}
	start := time.Now()
	srv.st.queries.Add(1)
	srv.st.rateLimited.Add(1)
	if b[2]&0x80 != 0 { // a response: never answered
		srv.observeRefused(start, -1)
		return true
	}
	out := append(r.out[:0], b[:12]...)
	r.out = out
	out[2] = b[2]&0x79 | 0x80 // QR, opcode and RD kept; AA, TC cleared
	out[3] = 0x80 | dns.RcodeRefused
	clear(out[4:12])
	if _, _, ok := parseQuery(b, r.key[:0]); ok {
		q, _ := questionEnd(b)
		out = append(out, b[12:q]...)
		out[5] = 1
	}
	r.out = out
	err := r.reply(conn, out, ua, sess)
	rcode := dns.RcodeRefused
	if err != nil {
		rcode = -1
	}
	srv.observeRefused(start, rcode)
	return true
}

// observeRefused reports a query the fast path refused, truncated or dropped
// (rcode -1) to the Observer.
func (srv *Server) observeRefused(start time.Time, rcode int) {
	if srv.deps.Observer.Query != nil {
		srv.deps.Observer.Query(time.Since(start), rcode)
	}
	if srv.deps.Observer.Result != nil {
		srv.deps.Observer.Result(ResultRefused)
	}
}

// fastEvents reports an answered lookup of a workload, as handle does.
func (srv *Server) fastEvents(wl *policy.Workload, rec *wlRecord, client netip.Addr, qname string, qtype uint16, rcode int, start time.Time) {
	req := request{start: start, client: client, q: &dns.Msg{Question: []dns.Question{{Name: qname, Qtype: qtype, Qclass: dns.ClassINET}}}}
	srv.reportAudit(srv.ctx, &req, &rec.lookup)
	srv.deps.Events.Emit(srv.ctx, srv.event(&req, wl, event.LookupAllowed, rec.decision.Outcome, dns.RcodeToString[rcode]))
}

// fastObserve feeds an answered lookup to tunnel detection, as tunnelObserve
// does.
func (srv *Server) fastObserve(wl *policy.Workload, wlName string, client netip.Addr, qname string, qtype uint16, rcode, size int, start time.Time) {
	v := srv.deps.Tunnel.Observe(tunnelKey(wlName, client), qname, qtype, rcode, size)
	if !v.Suspected {
		return
	}
	req := request{start: start, client: client, q: &dns.Msg{Question: []dns.Question{{Name: qname, Qtype: qtype, Qclass: dns.ClassINET}}}}
	srv.deps.Events.Emit(srv.ctx, tunnelEvent(srv.event(&req, wl, event.TunnelSuspected, policy.Outcome{Reason: v.Reason()}, dns.RcodeToString[rcode]), v))
}
