package dnsproxy

import (
	"context"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/telemetry/event"
)

// refused is the REFUSED reply of a query over a limit; responses get none.
func (srv *Server) refused(req *request) *dns.Msg {
	if req.q.Response {
		return nil
	}
	return srv.rcode(req, dns.RcodeRefused)
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
	ev := srv.event(req, wl, event.LookupBlocked, d.Outcome, dns.RcodeToString[m.Rcode])
	ev.CNAME = d.Via
	srv.deps.Events.Emit(ctx, ev)
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

// event builds the event of a lookup.
func (srv *Server) event(req *request, wl *policy.Workload, name string, o policy.Outcome, response string) event.Event {
	q := req.q.Question[0]
	ev := event.Event{
		Time: req.start, Name: name, Client: req.client.String(), ClientPort: req.port, TCP: req.tcp,
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
