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

// TestTrackerBounds: a (workload, name) holds at most maxPerName addresses
// and a workload at most maxPerWorkload elements; beyond, new addresses are
// refused (never evicted), known ones are refreshed, expired ones make room,
// and undo takes a reservation back.
func TestTrackerBounds(t *testing.T) {
	tr := newTracker(3, 8)
	w := policy.WorkloadKey{Namespace: "x", Name: "a"}
	now := time.Unix(1000, 0)
	ip := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i)) }
	admit := func(name string, expires time.Time, elems int, ips ...int) *grant {
		var as []netip.Addr
		var es []time.Time
		var ns []int
		for _, i := range ips {
			as, es, ns = append(as, ip(i)), append(es, expires), append(ns, elems)
		}
		return tr.admit(w, name, nil, as, es, ns, now)
	}
	exp := now.Add(time.Minute)
	if g := admit("S3.example.com", exp, 1, 1, 2, 3); g.refused() != 0 {
		t.Fatalf("first three refused %d", g.refused())
	}
	g := admit("s3.example.com.", exp.Add(time.Second), 1, 1, 4, 5) // 1 known: refreshed; 4, 5 over the cap
	if !g.ok[0] || g.ok[1] || g.ok[2] || g.overName != 2 || g.overWorkload != 0 {
		t.Fatalf("grant %+v, want 10.0.0.1 admitted, two refused by the name cap", g)
	}
	got := map[netip.Addr]time.Time{}
	for _, e := range tr.snapshot(now) {
		if e.Name != "s3.example.com." {
			t.Fatalf("name %q", e.Name)
		}
		got[e.IP] = e.Expires
	}
	if len(got) != 3 || !got[ip(1)].Equal(exp.Add(time.Second)) || !got[ip(2)].Equal(exp) {
		t.Fatalf("tracked %v, want 10.0.0.1 (refreshed), .2, .3", got)
	}
	// The workload bound (8 elements, 3 used): another name gets 2 addresses of 2
	// elements, the third is refused.
	if g := admit("other.example.com", exp, 2, 6, 7, 8); g.overWorkload != 1 || !g.ok[0] || !g.ok[1] || g.ok[2] {
		t.Fatalf("grant %+v, want 6 and 7 admitted, 8 refused by the workload bound", g)
	}
	if n := tr.workloadElements(w); n != 7 {
		t.Fatalf("elements %d, want 7", n)
	}
	// Another workload has its own bounds.
	if g := tr.admit(policy.WorkloadKey{Namespace: "x", Name: "b"}, "s3.example.com", nil, []netip.Addr{ip(9)}, []time.Time{exp}, []int{8}, now); g.refused() != 0 {
		t.Fatalf("other workload refused")
	}
	// undo forgets what a failed write added and restores refreshed expiries.
	g = admit("s3.example.com", exp.Add(time.Hour), 1, 2)
	g2 := admit("third.example.com", exp, 1, 10)
	tr.undo(g)
	tr.undo(g2)
	for _, e := range tr.snapshot(now) {
		if e.IP == ip(2) && !e.Expires.Equal(exp) || e.IP == ip(10) {
			t.Fatalf("after undo: %+v", e)
		}
	}
	if n := tr.workloadElements(w); n != 7 {
		t.Fatalf("elements after undo %d, want 7", n)
	}
	// Expired entries make room (for the name at once, for the workload after a prune).
	later := now.Add(2 * time.Minute)
	if g := tr.admit(w, "s3.example.com", nil, []netip.Addr{ip(4)}, []time.Time{later.Add(time.Minute)}, []int{1}, later); g.refused() != 0 {
		t.Fatalf("after expiry: refused %d", g.refused())
	}
	tr.prune(later)
	if n, l := tr.workloadElements(w), tr.len(); n != 1 || l != 1 {
		t.Fatalf("after prune: elements %d, tracked %d; want 1, 1", n, l)
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
