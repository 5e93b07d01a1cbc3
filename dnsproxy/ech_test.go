package dnsproxy

import (
	"testing"

	"github.com/miekg/dns"
)

func TestStripECH(t *testing.T) {
	rr := func(s string) dns.RR {
		t.Helper()
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	m := new(dns.Msg)
	m.SetQuestion("svc.test.", dns.TypeHTTPS)
	m.Answer = []dns.RR{
		rr(`svc.test. 60 IN HTTPS 1 . alpn="h2,h3" ech="AEX+DQBBpQAgACB/bXMk" ipv4hint=192.0.2.1`),
		rr(`svc.test. 60 IN HTTPS 2 alt.test. alpn="h2"`),
		rr(`_443._https.svc.test. 60 IN SVCB 1 . ech="AEX+DQBBpQAgACB/bXMk"`),
		rr(`svc.test. 60 IN A 192.0.2.1`),
	}
	if n := stripECH(m); n != 2 {
		t.Fatalf("changed %d records, want 2", n)
	}
	for _, r := range m.Answer {
		var kvs []dns.SVCBKeyValue
		switch r := r.(type) {
		case *dns.HTTPS:
			kvs = r.Value
		case *dns.SVCB:
			kvs = r.Value
		}
		for _, kv := range kvs {
			if kv.Key() == dns.SVCB_ECHCONFIG {
				t.Errorf("ech left in %s", r)
			}
		}
	}
	if h := m.Answer[0].(*dns.HTTPS); len(h.Value) != 2 || h.Value[0].Key() != dns.SVCB_ALPN || h.Value[1].Key() != dns.SVCB_IPV4HINT {
		t.Errorf("other SvcParams not kept: %s", h)
	}
	if _, err := m.Pack(); err != nil {
		t.Fatalf("the stripped answer does not pack: %v", err)
	}
}
