package netmodel

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// QueryDNS sends one query for qname/qtype with EDNS0 (1232 bytes) from
// inside ns to addr over network ("udp" or "tcp") and waits at most timeout.
func QueryDNS(ns *NS, addr, network, qname string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(qname), qtype)
	m.SetEdns0(1232, false)
	return ExchangeDNS(ns, &dns.Client{Net: network, Timeout: timeout}, m, addr)
}

// ExchangeDNS sends m with c from inside ns (the socket is created there, so
// its source is an address of ns; set c.Dialer.LocalAddr to pick one).
func ExchangeDNS(ns *NS, c *dns.Client, m *dns.Msg, addr string) (*dns.Msg, error) {
	var r *dns.Msg
	var qerr error
	if err := ns.Do(func() error {
		r, _, qerr = c.Exchange(m, addr)
		return nil
	}); err != nil {
		return nil, err
	}
	return r, qerr
}

// AnswerAddrs returns the A and AAAA addresses in r's answer section.
func AnswerAddrs(r *dns.Msg) []netip.Addr {
	var out []netip.Addr
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			a, _ := netip.AddrFromSlice(rr.A.To4())
			out = append(out, a)
		case *dns.AAAA:
			a, _ := netip.AddrFromSlice(rr.AAAA)
			out = append(out, a)
		}
	}
	return out
}
