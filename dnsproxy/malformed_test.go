package dnsproxy

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func mustPack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendRawUDP sends bytes and returns the reply, or nil when none came within
// 500ms.
func sendRawUDP(t testing.TB, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func header(id, bits, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	for i, v := range []uint16{id, bits, qd, an, ns, ar} {
		binary.BigEndian.PutUint16(b[2*i:], v)
	}
	return b
}

func TestMalformedQueries(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{f.addr}, nil)
	q := func(name string, qtype, qclass uint16) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.Question[0].Qclass = qclass
		return mustPack(t, m)
	}
	twoQuestions := new(dns.Msg)
	twoQuestions.Id = 7
	twoQuestions.Question = []dns.Question{{Name: "a.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "b.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	status := new(dns.Msg)
	status.SetQuestion("a.example.", dns.TypeA)
	status.Opcode = dns.OpcodeStatus
	update := new(dns.Msg)
	update.SetUpdate("example.")
	response := new(dns.Msg)
	response.SetQuestion("a.example.", dns.TypeA)
	response.Response = true
	badVers := new(dns.Msg)
	badVers.SetQuestion("a.example.", dns.TypeA)
	badVers.SetEdns0(1232, false)
	badVers.IsEdns0().SetVersion(1)
	twoOPT := new(dns.Msg)
	twoOPT.SetQuestion("a.example.", dns.TypeA)
	twoOPT.SetEdns0(1232, false)
	twoOPT.Extra = append(twoOPT.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}})
	optNotRoot := new(dns.Msg)
	optNotRoot.SetQuestion("a.example.", dns.TypeA)
	optNotRoot.Extra = []dns.RR{&dns.OPT{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeOPT, Class: 1232}}}
	longName := append(header(9, 0x0100, 1, 0, 0, 0), make([]byte, 0, 300)...)
	for i := 0; i < 5; i++ { // 5 labels of 63 bytes: a name over 255 bytes
		longName = append(longName, 63)
		for j := 0; j < 63; j++ {
			longName = append(longName, 'a')
		}
	}
	longName = append(longName, 0, 0, 1, 0, 1)
	loop := append(header(10, 0x0100, 1, 0, 0, 0), 0xc0, 12, 0, 1, 0, 1) // compression pointer to itself

	for _, tc := range []struct {
		name  string
		wire  []byte
		rcode int // -1: no reply
	}{
		{"garbage-short", []byte{0xde, 0xad, 0xbe}, -1},
		{"header-only-no-question", header(1, 0x0100, 0, 0, 0, 0), dns.RcodeFormatError},
		{"header-claims-question", header(2, 0x0100, 1, 0, 0, 0), dns.RcodeFormatError},
		{"two-questions", mustPack(t, twoQuestions), dns.RcodeFormatError},
		{"opcode-status", mustPack(t, status), dns.RcodeNotImplemented},
		{"opcode-update", mustPack(t, update), dns.RcodeNotImplemented},
		{"response-bit", mustPack(t, response), -1},
		{"name-over-255", longName, dns.RcodeFormatError},
		{"compression-loop", loop, dns.RcodeFormatError},
		{"class-chaos", q("version.bind.", dns.TypeTXT, dns.ClassCHAOS), dns.RcodeRefused},
		{"axfr", q("example.", dns.TypeAXFR, dns.ClassINET), dns.RcodeRefused},
		{"edns-version-1", mustPack(t, badVers), dns.RcodeBadVers},
		{"two-opt", mustPack(t, twoOPT), dns.RcodeFormatError},
		{"opt-not-root", mustPack(t, optNotRoot), dns.RcodeFormatError},
		{"trailing-garbage", append(header(11, 0x0100, 1, 0, 0, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), dns.RcodeFormatError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.srv.Stats().Malformed
			reply := sendRawUDP(t, h.addr, tc.wire)
			if tc.rcode < 0 {
				if reply != nil {
					t.Fatalf("want no reply, got %d bytes", len(reply))
				}
			} else {
				r := new(dns.Msg)
				if err := r.Unpack(reply); err != nil {
					t.Fatalf("reply %x: %v", reply, err)
				}
				if r.Rcode != tc.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if r.Id != binary.BigEndian.Uint16(tc.wire) {
					t.Errorf("reply ID %d", r.Id)
				}
				// RFC 6891 7: a FORMERR about the OPT record carries one, so
				// that the client tells it from a server without EDNS.
				if strings.Contains(tc.name, "opt") && r.IsEdns0() == nil {
					t.Errorf("no OPT record in the reply")
				}
			}
			// Every one is counted once, those the miekg/dns server rejects
			// or drops before the handler included.
			if got := h.srv.Stats().Malformed - before; got != 1 {
				t.Errorf("Malformed went up by %d, want 1", got)
			}
		})
	}
	// Still serving.
	if r := h.query(t, unknownIP, "udp", "ok.example", dns.TypeA, false); len(r.Answer) != 1 {
		t.Fatalf("after malformed queries: %v", r)
	}

}

func TestSlowTCPClientDoesNotBlockOthers(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{f.addr}, func(c *Config, _ *Deps) { c.TCPReadTimeout = 500 * time.Millisecond })
	// Slow clients: connections that send a length prefix and one byte, or
	// nothing at all, and never finish.
	var conns []net.Conn
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%2 == 0 {
			c.Write([]byte{0, 40, 1})
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for _, network := range []string{"udp", "tcp"} {
		if r := h.query(t, runnerIP, network, "fast.example", dns.TypeA, false); len(r.Answer) != 1 {
			t.Fatalf("%s: %v", network, r)
		}
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("queries took %v next to slow clients", d)
	}
	// The server closes the slow connections after the read timeout.
	conns[1].SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := conns[1].Read(make([]byte, 1)); err == nil {
		t.Error("slow connection still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("slow connection not closed by the server")
	}
}

func TestOversizeTCPQuery(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{f.addr}, nil)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A 65535-byte "query": a header with 5000 additional records of garbage.
	b := append(header(3, 0x0100, 1, 0, 0, 5000), make([]byte, 65535-12)...)
	c.Write([]byte{0xff, 0xff})
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var n [2]byte
	if _, err := c.Read(n[:]); err == nil {
		buf := make([]byte, binary.BigEndian.Uint16(n[:]))
		c.Read(buf)
		r := new(dns.Msg)
		if err := r.Unpack(buf); err == nil && r.Rcode != dns.RcodeFormatError {
			t.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
		}
	}
	if r := h.query(t, unknownIP, "tcp", "ok.example", dns.TypeA, false); len(r.Answer) != 1 {
		t.Fatalf("after oversize query: %v", r)
	}
}

var _ = netip.Addr{}
