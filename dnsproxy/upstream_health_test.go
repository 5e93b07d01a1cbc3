package dnsproxy

import (
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUpstreamHealthTransitionsReportedOnce: an upstream that stops
// answering is reported down once (however many queries fail after), shown by
// Upstreams with the time of the change, and reported up once when it answers
// again.
func TestUpstreamHealthTransitionsReportedOnce(t *testing.T) {
	up := startFakeUpstream(t, func(dns.ResponseWriter, *dns.Msg) {}) // silent
	var mu sync.Mutex
	var changes []bool
	h := start(t, []string{up.addr}, func(c *Config, d *Deps) {
		c.Timeout, c.QueryTimeout = 100*time.Millisecond, 300*time.Millisecond
		d.Observer.UpstreamHealth = func(addr string, ok bool) {
			if addr != up.addr {
				t.Errorf("health change of %s, want %s", addr, up.addr)
			}
			mu.Lock()
			changes = append(changes, ok)
			mu.Unlock()
		}
	})
	if st := h.srv.Upstreams(); len(st) != 1 || !st[0].Up || !st[0].Since.IsZero() {
		t.Fatalf("at start: %+v, want up since start", st)
	}
	for i := 0; i < 5; i++ {
		if r := h.query(t, gatewayIP, "udp", "a.test.", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("query %d with the upstream silent: %s", i, dns.RcodeToString[r.Rcode])
		}
	}
	mu.Lock()
	got := append([]bool(nil), changes...)
	mu.Unlock()
	if len(got) != 1 || got[0] {
		t.Fatalf("changes after 5 failed queries: %v, want one down", got)
	}
	if st := h.srv.Upstreams(); st[0].Up || st[0].Since.IsZero() {
		t.Fatalf("after the failures: %+v, want down with its time", st)
	}
	up.setHandler(answerA("192.0.2.1", 60))
	if r := h.query(t, gatewayIP, "udp", "b.test.", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("upstream answering again: %s", dns.RcodeToString[r.Rcode])
	}
	h.query(t, gatewayIP, "udp", "c.test.", dns.TypeA, false)
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || !changes[1] {
		t.Fatalf("changes: %v, want down then up", changes)
	}
	if st := h.srv.Upstreams(); !st[0].Up {
		t.Fatalf("after recovery: %+v", st)
	}
}

// TestAllDownFor: only when every upstream has been down for the grace.
func TestAllDownFor(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	grace := 10 * time.Second
	down := func(addr string, ago time.Duration) UpstreamState {
		return UpstreamState{Addr: addr, Since: now.Add(-ago)}
	}
	up := UpstreamState{Addr: "10.0.0.2:53", Up: true}
	for _, tc := range []struct {
		name string
		ups  []UpstreamState
		fail bool
	}{
		{"all up", []UpstreamState{up}, false},
		{"one down, one up", []UpstreamState{down("10.0.0.1:53", time.Hour), up}, false},
		{"all down within grace", []UpstreamState{down("10.0.0.1:53", time.Hour), down("10.0.0.3:53", 5*time.Second)}, false},
		{"all down past grace", []UpstreamState{down("10.0.0.1:53", time.Hour), down("10.0.0.3:53", 11*time.Second)}, true},
	} {
		down := AllDownFor(tc.ups, now, grace)
		if (len(down) > 0) != tc.fail {
			t.Errorf("%s: %q, want all down %v", tc.name, down, tc.fail)
		}
		if tc.fail && (len(down) != 2 || down[1] != "10.0.0.3:53") {
			t.Errorf("%s: %q does not name the upstreams", tc.name, down)
		}
	}
}
