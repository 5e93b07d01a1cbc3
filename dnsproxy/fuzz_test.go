package dnsproxy

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandle feeds arbitrary bytes to the message path of the listeners
// (header check, parse, classify, decide, answer, program). The resolver must
// not panic; a reply must parse, carry the query's ID and fit the client's
// buffer.
func FuzzHandle(f *testing.F) {
	up := startFakeUpstream(f, answerA("192.0.2.1", 60))
	h := start(f, []string{up.addr}, func(c *Config, _ *Deps) {
		c.Timeout, c.QueryTimeout = 100*1e6, 200*1e6
	})
	for _, seed := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"api.test.", dns.TypeA, false},
		{"xmr.minepool.test.", dns.TypeAAAA, true},
		{"txt.test.", dns.TypeTXT, true},
		{"Example.ORG.", dns.TypeANY, false},
	} {
		m := new(dns.Msg)
		m.SetQuestion(seed.name, seed.qtype)
		if seed.edns {
			m.SetEdns0(1232, true)
		}
		b, _ := m.Pack()
		f.Add(b, uint8(0), false)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0}, uint8(1), true)
	clients := []netip.Addr{gatewayIP, gateway1, runnerIP, unknownIP}
	f.Fuzz(func(t *testing.T, b []byte, client uint8, tcp bool) {
		from := netip.AddrPortFrom(clients[int(client)%len(clients)], 40000)
		out := h.srv.handleWire(b, from, tcp)
		if out == nil {
			return
		}
		r := new(dns.Msg)
		if err := r.Unpack(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if len(b) >= 2 && r.Id != uint16(b[0])<<8|uint16(b[1]) {
			t.Fatalf("reply ID %d", r.Id)
		}
		if !tcp && len(out) > 4096 {
			t.Fatalf("UDP reply of %d bytes", len(out))
		}
		if !r.Response {
			t.Fatal("reply without QR")
		}
	})
}
