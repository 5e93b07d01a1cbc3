package dnsproxy

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
)

// An S3-like name rotating through many addresses keeps at most max per
// (workload, name); the least recently answered go first and are counted.
func TestTrackerBoundLRU(t *testing.T) {
	tr := newTracker(3)
	w := policy.WorkloadKey{Namespace: "x", Name: "a"}
	now := time.Unix(1000, 0)
	exp := []time.Time{now.Add(time.Minute)}
	ip := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i)) }
	for i := 1; i <= 3; i++ {
		tr.record(w, "S3.example.com", nil, []netip.Addr{ip(i)}, exp)
	}
	tr.record(w, "s3.example.com.", nil, []netip.Addr{ip(1)}, exp) // 1 is the most recent again
	if n := tr.record(w, "s3.example.com", nil, []netip.Addr{ip(4), ip(5)}, []time.Time{exp[0], exp[0]}); n != 2 {
		t.Fatalf("evicted %d, want 2", n)
	}
	got := map[netip.Addr]bool{}
	for _, e := range tr.snapshot(now) {
		if e.Name != "s3.example.com." {
			t.Fatalf("name %q", e.Name)
		}
		got[e.IP] = true
	}
	if len(got) != 3 || !got[ip(1)] || !got[ip(4)] || !got[ip(5)] {
		t.Fatalf("kept %v, want 10.0.0.1, .4, .5", got)
	}
	if tr.evictions.Load() != 2 {
		t.Fatalf("evictions %d", tr.evictions.Load())
	}
	// Another workload or name has its own bound.
	tr.record(policy.WorkloadKey{Namespace: "x", Name: "b"}, "s3.example.com", nil, []netip.Addr{ip(9)}, exp)
	if tr.len() != 4 {
		t.Fatalf("len %d", tr.len())
	}
	// Expired entries are dropped by snapshot, not counted as evictions.
	if s := tr.snapshot(now.Add(2 * time.Minute)); len(s) != 0 || tr.len() != 0 || tr.evictions.Load() != 2 {
		t.Fatalf("after expiry: %v len %d evictions %d", s, tr.len(), tr.evictions.Load())
	}
}

// TestSweepDropsExpiredRecords: the periodic sweep removes answer addresses
// whose set entries expired from the tracker and from the policy model
// (Store.ExpireLookups), and counts them, so a name rotating through new
// addresses does not grow either without bound.
func TestSweepDropsExpiredRecords(t *testing.T) {
	var n atomic.Int32
	up := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			i := n.Add(1)
			r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.ParseIP(fmt.Sprintf("198.51.100.%d", i))}}
		}
		w.WriteMsg(r)
	})
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.CacheSize, c.SweepInterval = -1, time.Hour })
	for i := 0; i < 3; i++ {
		if r := h.query(t, gatewayIP, "udp", "s3.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("query %d: %v", i, r)
		}
	}
	store := h.eng.Store()
	if got := store.LookupRecords(); got != 3 {
		t.Fatalf("model records %d, want 3", got)
	}
	h.srv.sweep() // nothing expired yet
	if st := h.srv.Stats(); st.Swept != 0 || h.srv.track.len() != 3 {
		t.Fatalf("early sweep: swept %d, tracked %d", st.Swept, h.srv.track.len())
	}
	// TTL 60 + grace: gone a good while later, from both.
	h.clock.Advance(time.Hour)
	h.srv.sweep()
	if got := store.LookupRecords(); got != 0 {
		t.Errorf("model records after expiry %d, want 0", got)
	}
	if got := h.srv.track.len(); got != 0 {
		t.Errorf("tracked after expiry %d, want 0", got)
	}
	if st := h.srv.Stats(); st.Swept != 6 {
		t.Errorf("swept %d, want 6 (3 tracked + 3 model records)", st.Swept)
	}
}
