package dnsproxy

import (
	"github.com/miekg/dns"
)

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
