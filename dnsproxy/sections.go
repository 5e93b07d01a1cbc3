package dnsproxy

import "github.com/miekg/dns"

// minimize strips from an upstream answer the records a stub resolver does
// not need, as Unbound's minimal-responses does, before the answer is cached
// or sent:
//   - authority: only the SOA of a negative answer (NXDOMAIN, or NOERROR
//     without a record of the question's type: NODATA), which gives its
//     negative TTL (RFC 2308); with DO, also the DNSSEC records (NSEC, NSEC3,
//     RRSIG) that prove a negative or wildcard answer. NS records (the
//     zone's servers, referrals) go.
//   - additional: nothing. Glue and the addresses of SRV or MX targets there
//     would hand the client addresses that no rule programs; the OPT record
//     of the reply is egressd's own (added by fit).
//
// It returns the number of records removed.
func minimize(m *dns.Msg, do bool) int {
	removed := len(m.Extra)
	m.Extra = nil
	if len(m.Ns) == 0 {
		return removed
	}
	negative := m.Rcode == dns.RcodeNameError || (m.Rcode == dns.RcodeSuccess && !answers(m))
	kept := m.Ns[:0]
	for _, rr := range m.Ns {
		switch rr.Header().Rrtype {
		case dns.TypeSOA:
			if negative {
				kept = append(kept, rr)
				continue
			}
		case dns.TypeNSEC, dns.TypeNSEC3, dns.TypeRRSIG:
			if do && (negative || m.Rcode == dns.RcodeSuccess) {
				kept = append(kept, rr)
				continue
			}
		}
		removed++
	}
	clear(m.Ns[len(kept):])
	m.Ns = kept
	if len(m.Ns) == 0 {
		m.Ns = nil
	}
	return removed
}

// answers reports whether the answer section holds a record of the
// question's type (any record for ANY).
func answers(m *dns.Msg) bool {
	if len(m.Question) != 1 {
		return len(m.Answer) > 0
	}
	qt := m.Question[0].Qtype
	for _, rr := range m.Answer {
		if qt == dns.TypeANY || rr.Header().Rrtype == qt {
			return true
		}
	}
	return false
}
