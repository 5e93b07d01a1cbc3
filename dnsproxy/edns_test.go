package dnsproxy

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// TestEDNS0Passthrough: the client's DO bit reaches the upstream and the
// reply and keys the cache; the upstream is asked with egressd's buffer size;
// the client's buffer size decides truncation (512 without EDNS0), TCP gets
// everything; a reply carries an OPT record only when the query had one.
func TestEDNS0Passthrough(t *testing.T) {
	type seen struct {
		size uint16
		do   bool
		edns bool
	}
	var mu sync.Mutex
	var upstream []seen
	up := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
		s := seen{}
		if o := q.IsEdns0(); o != nil {
			s = seen{o.UDPSize(), o.Do(), true}
		}
		mu.Lock()
		upstream = append(upstream, s)
		mu.Unlock()
		r := new(dns.Msg)
		r.SetReply(q)
		for i := 1; i <= 40; i++ { // about 700 bytes
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.ParseIP(fmt.Sprintf("192.0.2.%d", i))})
		}
		if s.edns {
			r.SetEdns0(4096, s.do)
		}
		w.WriteMsg(r)
	})
	h := start(t, []string{up.addr}, nil)
	seenUp := func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(upstream)
	}
	ask := func(network string, edns bool, size uint16, do bool) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("big.example.", dns.TypeA)
		if edns {
			m.SetEdns0(size, do)
		}
		r, err := exchangeFrom(unknownIP, network, h.addr, m)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := ask("udp", true, 4096, true)
	o := r.IsEdns0()
	if r.Truncated || len(r.Answer) != 40 || o == nil || !o.Do() {
		t.Fatalf("DO client, 4096 bytes: TC %v, %d answers, OPT %v", r.Truncated, len(r.Answer), o)
	}
	if u := seenUp(); len(u) != 1 || u[0] != (seen{1232, true, true}) {
		t.Fatalf("upstream saw %+v, want EDNS0 1232 with DO", u)
	}
	// Without DO: another cache entry, another upstream query, without DO.
	r = ask("udp", true, 1232, false)
	if r.Truncated || len(r.Answer) != 40 || r.IsEdns0() == nil || r.IsEdns0().Do() {
		t.Fatalf("client without DO: %v", r)
	}
	if u := seenUp(); len(u) != 2 || u[1] != (seen{1232, false, true}) {
		t.Fatalf("upstream saw %+v", u)
	}
	// The client's buffer size decides truncation.
	if r = ask("udp", true, 512, false); !r.Truncated || len(r.Answer) >= 40 || r.IsEdns0() == nil {
		t.Errorf("512-byte EDNS0 client: TC %v, %d answers", r.Truncated, len(r.Answer))
	}
	if r = ask("udp", false, 0, false); !r.Truncated || len(r.Answer) >= 40 || r.IsEdns0() != nil {
		t.Errorf("client without EDNS0: TC %v, %d answers, OPT %v", r.Truncated, len(r.Answer), r.IsEdns0())
	}
	if r = ask("tcp", false, 0, false); r.Truncated || len(r.Answer) != 40 {
		t.Errorf("TCP: TC %v, %d answers", r.Truncated, len(r.Answer))
	}
	if u := seenUp(); len(u) != 2 {
		t.Errorf("%d upstream queries, want 2 (the rest from the cache)", len(u))
	}
}
