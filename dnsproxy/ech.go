package dnsproxy

import "github.com/miekg/dns"

// stripECH removes the "ech" SvcParam (RFC 9460 key 5, the ECH
// configuration) from the HTTPS and SVCB records of an upstream answer, before
// it is cached: a client that never learns an ECH configuration sends a
// ClientHello with a visible SNI, which the transparent L7 proxy can check
// (it resets ClientHellos that carry ECH). Every other record and SvcParam is
// kept. It returns the number of records changed. docs/egressd.md ("DNS side
// doors", --keep-ech) has the trade-off.
func stripECH(m *dns.Msg) int {
	n := 0
	for _, sec := range [][]dns.RR{m.Answer, m.Extra} {
		for _, rr := range sec {
			var svcb *dns.SVCB
			switch rr := rr.(type) {
			case *dns.HTTPS:
				svcb = &rr.SVCB
			case *dns.SVCB:
				svcb = rr
			default:
				continue
			}
			kept := svcb.Value[:0]
			for _, kv := range svcb.Value {
				if kv.Key() != dns.SVCB_ECHCONFIG {
					kept = append(kept, kv)
				}
			}
			if len(kept) != len(svcb.Value) {
				clear(svcb.Value[len(kept):])
				svcb.Value = kept
				n++
			}
		}
	}
	return n
}
