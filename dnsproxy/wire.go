package dnsproxy

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/miekg/dns"
)

// The wire forms of the UDP fast path (fastpath.go): a plain query parsed
// from its raw bytes, and a cache entry packed as a reply with the offsets
// of every TTL and address, patched in place for each client.

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
