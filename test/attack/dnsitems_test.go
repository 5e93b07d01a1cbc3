package attack

import (
	"encoding/binary"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// sendRaw sends b over UDP from inside ns to addr and returns the reply, or
// nil when none came within a second.
func sendRaw(t *testing.T, ns *netmodel.NS, addr string, b []byte) []byte {
	t.Helper()
	var reply []byte
	err := ns.Do(func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(b); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 65535)
		if n, err := c.Read(buf); err == nil {
			reply = buf[:n]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// srvZone: an SRV record whose target's address CoreDNS adds to the
// additional section.
const srvZone = `_http._tcp.world.test. 60 IN SRV 0 0 80 target.world.test.
target.world.test. 60 IN A 192.0.2.77
`

func sectionTypes(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, dns.TypeToString[rr.Header().Rrtype])
	}
	return out
}

// TestReplayDNSSmallItems replays the small DNS items of issue 17 from a pod:
// two OPT records and an OPT not owned by the root (RFC 6891: FORMERR);
// the upstream's NS records and glue passed through in the authority and
// additional sections; and malformed packets and junk, which must all be
// counted in egressd_dns_malformed_total.
func TestReplayDNSSmallItems(t *testing.T) {
	w := New(t, Config{Zone: unknownZone + srvZone, Policies: denyMiningPolicies})
	a := w.StartAgent(AgentOptions{})
	pod := w.Pods[0]

	// RFC 6891 6.1.1.
	twoOPT := new(dns.Msg)
	twoOPT.SetQuestion("ok.world.test.", dns.TypeA)
	twoOPT.SetEdns0(1232, false)
	twoOPT.Extra = append(twoOPT.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}})
	notRoot := new(dns.Msg)
	notRoot.SetQuestion("ok.world.test.", dns.TypeA)
	notRoot.Extra = []dns.RR{&dns.OPT{Hdr: dns.RR_Header{Name: "ok.world.test.", Rrtype: dns.TypeOPT, Class: 1232}}}
	for _, c := range []struct {
		name string
		m    *dns.Msg
	}{{"two OPT records", twoOPT}, {"OPT owned by ok.world.test.", notRoot}} {
		r, err := Exchange(pod.NS, &dns.Client{Net: "udp", Timeout: 5 * time.Second}, c.m, ResolverAddr)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		t.Logf("%s: %s, answer %v, OPT in reply %v", c.name, Rcode(r), AnswerAddrs(r), r.IsEdns0() != nil)
		if r.Rcode != dns.RcodeFormatError || len(r.Answer) != 0 || r.IsEdns0() == nil {
			t.Errorf("%s: %s %v, want FORMERR with an OPT record", c.name, Rcode(r), AnswerAddrs(r))
		}
	}

	// Authority and additional sections: the upstream (CoreDNS, file plugin)
	// sends the zone's NS records and their glue.
	for _, c := range []struct {
		qname  string
		qtype  uint16
		rcode  int
		wantNs []string
	}{
		{"ok.world.test.", dns.TypeA, dns.RcodeSuccess, nil},
		{"nx.world.test.", dns.TypeA, dns.RcodeNameError, []string{"SOA"}},
		{"_http._tcp.world.test.", dns.TypeSRV, dns.RcodeSuccess, nil},
	} {
		for _, network := range []string{"udp", "tcp"} {
			for range 2 { // from the upstream, then from the cache
				r := w.Ask(pod, network, c.qname, c.qtype)
				t.Logf("%s over %s: %s authority %v additional %v", c.qname, network, Rcode(r), sectionTypes(r.Ns), sectionTypes(r.Extra))
				if r.Rcode != c.rcode || !slices.Equal(sectionTypes(r.Ns), c.wantNs) || !slices.Equal(sectionTypes(r.Extra), []string{"OPT"}) {
					t.Errorf("%s over %s: %s authority %v additional %v, want %s authority %v additional [OPT]",
						c.qname, network, Rcode(r), sectionTypes(r.Ns), sectionTypes(r.Extra), dns.RcodeToString[c.rcode], c.wantNs)
				}
			}
		}
	}

	// Malformed packets and junk: every one is counted.
	q := new(dns.Msg)
	q.SetQuestion("ok.world.test.", dns.TypeA)
	good, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(id, bits, qd, an, ns, ar uint16) []byte {
		b := make([]byte, 12)
		for i, v := range []uint16{id, bits, qd, an, ns, ar} {
			binary.BigEndian.PutUint16(b[2*i:], v)
		}
		return b
	}
	response := slices.Clone(good)
	response[2] |= 0x80
	junk := [][]byte{
		{0xde, 0xad, 0xbe},         // shorter than a header: dropped
		hdr(1, 0x0100, 0, 0, 0, 0), // no question: FORMERR
		append(hdr(2, 0x0100, 1, 0, 0, 0), 0xc0, 12, 0, 1, 0, 1), // compression loop: FORMERR
		append(hdr(4, 0x0100, 1, 0, 0, 0), 3, 'a', 'b'),          // question cut short: FORMERR
		response,                   // a response: dropped
		hdr(3, 0x2100, 1, 0, 0, 0), // opcode STATUS: NOTIMP
	}
	before := a.Metric("egressd_dns_malformed_total")
	for i, b := range junk {
		reply := "none"
		if rb := sendRaw(t, pod.NS, ResolverAddr, b); rb != nil {
			r := new(dns.Msg)
			if err := r.Unpack(rb); err != nil {
				t.Fatalf("junk %d: reply %x: %v", i, rb, err)
			}
			reply = Rcode(r)
		}
		t.Logf("junk %d (%d bytes): reply %s", i, len(b), reply)
	}
	// The two OPT queries above were counted too.
	after := a.Metric("egressd_dns_malformed_total")
	t.Logf("egressd_dns_malformed_total: %v before the junk, %v after %d junk packets", before, after, len(junk))
	if before != 2 || after-before != float64(len(junk)) {
		t.Errorf("egressd_dns_malformed_total %v then %v, want 2 (the OPT queries) then +%d", before, after, len(junk))
	}
	// Still serving.
	if r := w.Ask(pod, "udp", "ok.world.test", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("after the junk: %s", Rcode(r))
	}
}
