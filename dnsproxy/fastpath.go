package dnsproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
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

// wireForm is a cache entry packed as a reply: ID 0, the question in lower
// case, no OPT record, TTLs as stored.
type wireForm struct {
	name  string // lower case, as in the question of b
	b     []byte
	qend  int       // end of the question section
	ttls  []ttlSlot // every record's TTL field (OPT excluded: there is none)
	addrs []addrSlot
	// rebind caches rebindHit: 0 unknown, 1 no address dropped, 2 some.
	rebind atomic.Int32
}

type ttlSlot struct {
	off    int
	ttl    uint32
	answer bool
}

// addrSlot is an A/AAAA of the answer section (the whole CNAME chain).
type addrSlot struct {
	ip   netip.Addr
	slot int // index in ttls
}

// wlRecord is what the fast path keeps per cache entry and workload, valid
// for one store generation.
type wlRecord struct {
	key      policy.WorkloadKey
	gen      uint64
	wlName   string                // "namespace/name"
	decision policy.LookupDecision // of the question and the answer's alias chain
	rules    []policy.RuleRef
	links    []string // the answer's alias chain links (chain.Of)
	// until is when the earliest kernel entry written for this answer and
	// workload expires (zero: nothing written yet).
	until time.Time
}

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

// query is what the fast path reads from a raw query.
type query struct {
	id      uint16
	qend    int // end of the question
	qtype   uint16
	edns    bool
	udpSize uint16
	do      bool
}

// parseQuery reads a plain query: QUERY opcode, one IN question with a name
// of letters, digits, '-' and '_' (so that its text form is the wire form),
// no answer or authority records and at most an EDNS0 version 0 OPT record.
// It appends the cache key (as cacheKey builds it) to key. ok=false: leave
// the query to the slow path.
func parseQuery(b []byte, key []byte) (q query, k []byte, ok bool) {
	if len(b) < 17 {
		return q, key, false
	}
	q.id = binary.BigEndian.Uint16(b)
	f0, f1 := b[2], b[3]
	if f0&0xF8 != 0 || // QR or an opcode other than QUERY
		binary.BigEndian.Uint16(b[4:]) != 1 || binary.BigEndian.Uint16(b[6:]) != 0 ||
		binary.BigEndian.Uint16(b[8:]) != 0 {
		return q, key, false
	}
	ar := binary.BigEndian.Uint16(b[10:])
	if ar > 1 {
		return q, key, false
	}
	i := 12
	for {
		l := int(b[i])
		if l == 0 {
			break
		}
		if l > 63 || i+1+l >= len(b) {
			return q, key, false
		}
		for _, c := range b[i+1 : i+1+l] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				return q, key, false
			}
			key = append(key, c)
		}
		key = append(key, '.')
		i += 1 + l
	}
	if i == 12 || i-12+1 > 255 || i+5 > len(b) {
		return q, key, false // root, too long, or short
	}
	q.qtype = binary.BigEndian.Uint16(b[i+1:])
	if binary.BigEndian.Uint16(b[i+3:]) != dns.ClassINET {
		return q, key, false
	}
	switch q.qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeOPT:
		return q, key, false
	}
	q.qend = i + 5
	if ar == 1 {
		o := b[q.qend:]
		if len(o) < 11 || o[0] != 0 || binary.BigEndian.Uint16(o[1:]) != dns.TypeOPT ||
			o[6] != 0 || // version
			int(binary.BigEndian.Uint16(o[9:]))+11 != len(o) {
			return q, key, false
		}
		q.edns, q.udpSize, q.do = true, binary.BigEndian.Uint16(o[3:]), o[7]&0x80 != 0
	} else if q.qend != len(b) {
		return q, key, false
	}
	flags := byte(0)
	if f0&1 != 0 { // RD
		flags |= 1
	}
	if f1&0x10 != 0 { // CD
		flags |= 2
	}
	if q.do {
		flags |= 4
	}
	key = append(key, 0, byte(q.qtype>>8), byte(q.qtype), 0, byte(dns.ClassINET), flags)
	return q, key, true
}

// wireOf returns the packed reply of e, building it on first use; nil when
// the entry cannot be served at the wire level.
func (e *cacheEntry) wireOf(key []byte) *wireForm {
	if wf := e.wire.Load(); wf != nil {
		return wf
	}
	flags := key[len(key)-1]
	m := copyWithTTL(e.msg, func(t uint32) uint32 { return t })
	m.Response, m.Opcode, m.RecursionAvailable, m.Truncated = true, dns.OpcodeQuery, true, false
	m.RecursionDesired, m.CheckingDisabled = flags&1 != 0, flags&2 != 0
	if len(m.Question) != 1 {
		return nil
	}
	m.Question[0].Name = string(key[:len(key)-6])
	m.Compress = true
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	wf := &wireForm{name: m.Question[0].Name, b: b, qend: 12 + len(key) - 6 + 1 + 4}
	if !wf.index(len(m.Answer), len(m.Ns), len(m.Extra)) {
		return nil
	}
	e.wire.Store(wf)
	return wf
}

// index finds the TTL field and the A/AAAA data of every record.
func (wf *wireForm) index(an, ns, ar int) bool {
	b := wf.b
	i := wf.qend
	for n := 0; n < an+ns+ar; n++ {
		// owner name
		for {
			if i >= len(b) {
				return false
			}
			l := int(b[i])
			if l&0xC0 == 0xC0 {
				i += 2
				break
			}
			i += 1 + l
			if l == 0 {
				break
			}
		}
		if i+10 > len(b) {
			return false
		}
		typ := binary.BigEndian.Uint16(b[i:])
		rdlen := int(binary.BigEndian.Uint16(b[i+8:]))
		if i+10+rdlen > len(b) {
			return false
		}
		wf.ttls = append(wf.ttls, ttlSlot{off: i + 4, ttl: binary.BigEndian.Uint32(b[i+4:]), answer: n < an})
		rd := b[i+10 : i+10+rdlen]
		if n < an {
			switch {
			case typ == dns.TypeA && rdlen == 4:
				wf.addrs = append(wf.addrs, addrSlot{netip.AddrFrom4([4]byte(rd)), len(wf.ttls) - 1})
			case typ == dns.TypeAAAA && rdlen == 16:
				wf.addrs = append(wf.addrs, addrSlot{netip.AddrFrom16([16]byte(rd)).Unmap(), len(wf.ttls) - 1})
			}
		}
		i += 10 + rdlen
	}
	return i == len(b)
}

// workloadOf returns the workload of a client (nil: not a workload), cached
// per store generation.
func (srv *Server) workloadOf(client netip.Addr, gen uint64) *policy.Workload {
	c := &srv.fast.wls
	c.mu.RLock()
	if c.gen == gen && c.m != nil {
		if w, ok := c.m[client]; ok {
			c.mu.RUnlock()
			return w
		}
	}
	c.mu.RUnlock()
	store := srv.deps.Engine.Store()
	var wl *policy.Workload
	if key, ok := store.WorkloadByIP(client); ok {
		if w, ok := store.Workload(key); ok {
			wl = &w
		}
	}
	c.mu.Lock()
	if c.gen != gen || c.m == nil || len(c.m) >= 65536 {
		c.gen, c.m = gen, make(map[netip.Addr]*policy.Workload)
	}
	c.m[client] = wl
	c.mu.Unlock()
	return wl
}

// fastState is the fast path's part of a Server.
type fastState struct {
	wls  wlCache
	hits atomic.Uint64 // queries answered by the fast path
}

// wlCache maps client addresses to workloads for one store generation.
type wlCache struct {
	mu  sync.RWMutex
	gen uint64
	m   map[netip.Addr]*policy.Workload
}

// record returns the decision and rules of workload w for the entry's name,
// computed once per store generation. The decision covers the answer's alias
// chain (Engine.DecideChain): a CNAME or DNAME into a denied name is
// blocked, and the slow path answers it.
func (srv *Server) record(e *cacheEntry, w *policy.Workload, gen uint64) *wlRecord {
	k := w.Key()
	var rec *wlRecord
	e.mu.Lock()
	for _, r := range e.wl {
		if r.key == k {
			rec = r
			break
		}
	}
	e.mu.Unlock()
	if rec != nil && rec.gen == gen {
		return rec
	}
	name := e.msg.Question[0].Name
	eng := srv.deps.Engine
	rec = &wlRecord{key: k, gen: gen, wlName: k.String(), decision: eng.DecideLookup(k, name)}
	if !rec.decision.Blocked() {
		rec.links = chain.Of(e.msg).Links
		rec.decision = eng.DecideChain(rec.decision, rec.links)
	}
	if !rec.decision.Blocked() {
		rec.rules = eng.FQDNRules(k, name)
	}
	e.mu.Lock()
	e.wl = slices.DeleteFunc(e.wl, func(r *wlRecord) bool { return r.key == k || r.gen != gen })
	if len(e.wl) < 64 { // bounded: beyond, decisions are recomputed
		e.wl = append(e.wl, rec)
	}
	e.mu.Unlock()
	return rec
}

// serve answers b from the cache when it can; false leaves it to the server.
func (r *fastReader) serve(conn *net.UDPConn, b []byte, sess *dns.SessionUDP) bool {
	srv := r.srv
	start := time.Now()
	q, key, ok := parseQuery(b, r.key[:0])
	r.key = key
	if !ok {
		return false
	}
	now := srv.now()
	e := srv.cache.fresh(key, now)
	if e == nil || len(e.msg.Question) != 1 {
		return false
	}
	wf := e.wireOf(key)
	if wf == nil {
		return false
	}
	// Records of the packed answer may point into the question (name
	// compression): only a query spelled as stored gets the packed answer
	// unchanged (mixed-case spellings, as 0x20 randomisation, take the slow path).
	if !bytes.Equal(b[12:q.qend-4], wf.b[12:wf.qend-4]) {
		return false
	}
	if srv.rebindHit(wf) {
		return false // rebinding protection filters and reports on the slow path
	}
	ua, _ := sess.RemoteAddr().(*net.UDPAddr)
	if ua == nil {
		return false
	}
	client := addrOf(ua)

	// decide
	var wl *policy.Workload
	var rec *wlRecord
	var gen uint64
	if eng := srv.deps.Engine; eng != nil {
		gen = eng.Store().Generation()
		if wl = srv.workloadOf(client, gen); wl != nil {
			if rec = srv.record(e, wl, gen); rec.decision.Blocked() {
				return false
			}
		} else if !srv.unknown.served(client, now) {
			return false // the slow path waits for the store or refuses
		}
	}

	// DNS tunnel detection sees every query; a quarantined pair is refused by
	// the slow path.
	var wlName string
	if wl != nil {
		wlName = rec.wlName
	}
	qname := ""
	if srv.deps.Tunnel != nil {
		qname = wf.name // the client's spelling: checked equal above
		if blocked, _ := srv.deps.Tunnel.Blocked(wlName, client, qname); blocked {
			return false
		}
	}

	// reply: the packed answer with the client's ID, spelling and flags,
	// TTLs decremented by age (and clamped for workloads, as program does)
	out := append(r.out[:0], wf.b...)
	binary.BigEndian.PutUint16(out, q.id)
	age := uint32(now.Sub(e.stored) / time.Second)
	minAddr := ^uint32(0)
	for _, a := range wf.addrs {
		t := wf.ttls[a.slot].ttl
		minAddr = min(minAddr, t-min(age, t))
	}
	clamp := wl != nil && len(rec.rules) > 0 && len(wf.addrs) > 0 && srv.deps.Sets != nil
	for _, s := range wf.ttls {
		t := s.ttl - min(age, s.ttl)
		if clamp && s.answer {
			t = min(t, minAddr)
		}
		binary.BigEndian.PutUint32(out[s.off:], t)
	}
	size := dns.MinMsgSize
	if q.edns {
		out = append(out, 0, 0, byte(dns.TypeOPT), 0, 0, 0, 0, 0, 0, 0, 0)
		o := out[len(out)-11:]
		binary.BigEndian.PutUint16(o[3:], srv.s.MaxUDPSize)
		if q.do {
			o[7] = 0x80
		}
		binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
		size = int(min(max(q.udpSize, dns.MinMsgSize), srv.s.MaxUDPSize))
	}
	r.out = out
	if len(out) > size {
		return false // truncation: the slow path does it
	}
	rcode := int(out[3] & 0xF)
	switch srv.rrl.check(client, wf.name, q.qtype, rcode, now) {
	case rrlTruncate:
		srv.st.rrlTruncated.Add(1)
		out = out[:wf.qend]
		out[2] |= 0x02 // TC
		clear(out[6:12])
		r.reply(conn, out, ua, sess)
		srv.observeRefused(start, rcode)
		return true
	case rrlDrop:
		srv.st.rrlDropped.Add(1)
		srv.observeRefused(start, -1)
		return true
	}

	// program: only when the entries written for this answer and workload
	// would expire too early for this reply
	if clamp {
		need := time.Duration(max(minAddr, srv.s.minSetTTL)+srv.s.grace/2) * time.Second
		e.mu.Lock()
		until := rec.until
		e.mu.Unlock()
		if until.Before(now.Add(need)) {
			if !srv.fastProgram(e, wf, wl, rec, age, now) {
				return false // the slow path writes again and answers SERVFAIL on failure
			}
		}
	}

	srv.st.queries.Add(1)
	srv.st.cacheHits.Add(1)
	srv.fast.hits.Add(1)
	if wl == nil && srv.deps.Engine != nil {
		srv.st.unknownServed.Add(1)
	}
	if srv.deps.Tunnel != nil {
		srv.fastObserve(wl, wlName, client, qname, q.qtype, rcode, len(out), start)
	}
	if wl != nil { // reported before the reply, as handle does
		srv.fastEvents(wl, rec, client, wf.name, q.qtype, rcode, start)
	}
	err := r.reply(conn, out, ua, sess)
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
		if wl != nil {
			if a := rec.decision.Audit; a != nil && a.Verdict == policy.Deny {
				res = ResultAudit
			}
		}
		srv.deps.Observer.Result(res)
	}
	return true
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

// questionEnd returns the end of the first question of a query that
// parseQuery accepted.
func questionEnd(b []byte) (int, bool) {
	i := 12
	for i < len(b) && b[i] != 0 {
		i += 1 + int(b[i])
	}
	if i+5 > len(b) {
		return 0, false
	}
	return i + 5, true
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

// fastProgram writes the pairs of the answer for the workload, as program
// does for the same reply, and notes until when they last.
func (srv *Server) fastProgram(e *cacheEntry, wf *wireForm, w *policy.Workload, rec *wlRecord, age uint32, now time.Time) bool {
	var srcs [2][]netip.Addr
	for _, ip := range w.IPs {
		ip = ip.Unmap()
		if ip.Is4() {
			srcs[0] = append(srcs[0], ip)
		} else {
			srcs[1] = append(srcs[1], ip)
		}
	}
	// The bounds (limits.go): anything refused goes to the slow path, which
	// removes it from the reply and reports it.
	addrs := make([]answerAddr, len(wf.addrs))
	for i, a := range wf.addrs {
		t := wf.ttls[a.slot].ttl
		addrs[i] = answerAddr{a.ip, t - min(age, t)}
	}
	admitted, grant, err := srv.admitAnswer(srv.ctx, nil, w, rec.rules, srcs, e.msg.Question[0].Name, rec.links, addrs, nil)
	if err != nil || len(admitted) != len(addrs) {
		srv.track.undo(grant)
		return false
	}
	var elems [2][]ipset.Element
	minTimeout := ^uint32(0)
	for _, a := range wf.addrs {
		t := wf.ttls[a.slot].ttl
		t -= min(age, t)
		fi := 0
		if !a.ip.Is4() {
			fi = 1
		}
		to := srv.s.setTimeout(t)
		if len(srcs[fi]) > 0 {
			minTimeout = min(minTimeout, to)
		}
		for _, src := range srcs[fi] {
			elems[fi] = append(elems[fi], ipset.Pair(src, a.ip, time.Duration(to)*time.Second))
		}
	}
	var ops []ipset.Op
	n := 0
	for _, rule := range rec.rules {
		for fi, fam := range [2]ipset.Family{ipset.IPv4, ipset.IPv6} {
			if len(elems[fi]) == 0 {
				continue
			}
			ops = append(ops, ipset.Op{Kind: ipset.OpAdd, Set: srv.deps.SetNamer(rule, fam), Elements: elems[fi]})
			n += len(elems[fi])
		}
	}
	if len(ops) > 0 {
		ctx, cancel := context.WithTimeout(srv.ctx, srv.s.SetWriteTimeout)
		start := time.Now()
		err := srv.deps.Sets.Apply(ctx, ops...)
		cancel()
		if srv.deps.Observer.SetWrite != nil {
			srv.deps.Observer.SetWrite(n, time.Since(start), err)
		}
		if err != nil {
			// Not counted: the slow path retries and counts its own write.
			srv.track.undo(grant)
			return false
		}
		srv.st.setWrites.Add(1)
		srv.st.setElements.Add(uint64(n))
	}
	if minTimeout == ^uint32(0) {
		minTimeout = 1 << 30 // nothing to write for this workload's families
	}
	e.mu.Lock()
	rec.until = now.Add(time.Duration(minTimeout) * time.Second)
	e.mu.Unlock()
	if len(ops) > 0 {
		srv.trackAnswer(w.Key(), e.msg.Question[0].Name, addrs) // tracker.go, as program does
	} else {
		srv.track.undo(grant) // nothing written, as program does
	}
	return true
}

// fastEvents reports an answered lookup of a workload, as handle does.
func (srv *Server) fastEvents(wl *policy.Workload, rec *wlRecord, client netip.Addr, qname string, qtype uint16, rcode int, start time.Time) {
	req := request{start: start, client: client, q: &dns.Msg{Question: []dns.Question{{Name: qname, Qtype: qtype, Qclass: dns.ClassINET}}}}
	if a := rec.decision.Audit; a != nil && a.Verdict == policy.Deny {
		srv.st.audited.Add(1)
		ev := srv.event(&req, wl, EventLookupAudit, *a, "NOERROR")
		ev.CNAME = rec.decision.AuditVia
		srv.deps.Reporter.LookupAudit(srv.ctx, ev)
	}
	srv.deps.Reporter.LookupAllowed(srv.ctx, srv.event(&req, wl, EventLookupAllowed, rec.decision.Outcome, dns.RcodeToString[rcode]))
}

// fastObserve feeds an answered lookup to tunnel detection, as tunnelObserve
// does.
func (srv *Server) fastObserve(wl *policy.Workload, wlName string, client netip.Addr, qname string, qtype uint16, rcode, size int, start time.Time) {
	v := srv.deps.Tunnel.Observe(srv.ctx, wlName, client, qname, qtype, rcode, size)
	if !v.Suspected {
		return
	}
	if r, ok := srv.deps.Reporter.(TunnelReporter); ok {
		req := request{start: start, client: client, q: &dns.Msg{Question: []dns.Question{{Name: qname, Qtype: qtype, Qclass: dns.ClassINET}}}}
		ev := srv.event(&req, wl, EventTunnelSuspected, policy.Outcome{Reason: v.Reason}, dns.RcodeToString[rcode])
		ev.Domain, ev.Score, ev.Features = v.Domain, v.Score, v.Features
		r.TunnelEvent(srv.ctx, ev)
	}
}
