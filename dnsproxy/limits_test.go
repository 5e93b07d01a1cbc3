package dnsproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/fake"
)

// dropped is the number of addresses a dns.answer.capped event reports.
func dropped(ev event.Event) int {
	n, _ := strconv.Atoi(ev.Attrs[AttrDropped])
	return n
}

// manyA answers every A query with n addresses 10.<k>.x.y, k distinct per
// name (the first label's digits), TTL 300.
func manyA(n int) func(w dns.ResponseWriter, q *dns.Msg) {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			k := 0
			fmt.Sscanf(strings.TrimLeft(q.Question[0].Name, "abcdefghijklmnopqrstuvwxyz"), "%d", &k)
			for i := range n {
				r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
					A: net.IPv4(10, byte(k), byte(i>>8), byte(i))})
			}
		}
		w.WriteMsg(r)
	}
}

// replyAddrs returns the addresses of a reply's answer section.
func replyAddrs(m *dns.Msg) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, rr := range m.Answer {
		if ip, ok := chain.Addr(rr); ok {
			out[ip] = true
		}
	}
	return out
}

// setDsts returns the destination addresses of a pair set.
func setDsts(t *testing.T, m ipset.Manager, set string) map[netip.Addr]bool {
	t.Helper()
	es, err := m.List(context.Background(), set)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Addr]bool{}
	for _, e := range es {
		out[e.Prefix.Addr()] = true
	}
	return out
}

// TestAnswerCapPerAnswer: an upstream answer of 2,000 A records keeps the
// first MaxIPsPerAnswer; the rest is removed before caching (so neither the
// first reply nor a cached one carries them), never written, counted and
// reported; the reply's addresses are exactly the set's.
func TestAnswerCapPerAnswer(t *testing.T) {
	up := startFakeUpstream(t, manyA(2000))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.MaxIPsPerAnswer = 100 })
	for i := range 2 { // upstream, then cache
		r := h.query(t, gatewayIP, "tcp", "big1.test", dns.TypeA, true)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 100 {
			t.Fatalf("query %d: rcode %s, %d records; want 100", i, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		got, set := replyAddrs(r), setDsts(t, h.sets, setName(ruleApis, ipset.IPv4))
		if len(set) != 100 {
			t.Fatalf("set holds %d addresses, want 100", len(set))
		}
		for ip := range got {
			if !set[ip] {
				t.Fatalf("reply carries %v, which is not in the set", ip)
			}
		}
	}
	if st := h.srv.Stats(); st.IPsOverAnswerCap != 1900 {
		t.Errorf("over answer cap %d, want 1900", st.IPsOverAnswerCap)
	}
	evs := h.rep.find(event.AnswerCapped)
	if len(evs) != 1 || evs[0].Reason != ReasonMaxIPsPerAnswer || dropped(evs[0]) != 1900 || evs[0].Workload != "payments/gateway-0" || evs[0].QName != "big1.test." {
		t.Errorf("capped events %+v, want one naming max-ips-per-answer with 1900 dropped", evs)
	}
}

// TestWorkloadElementBound: lookups of many names with many addresses each
// put at most MaxElementsPerWorkload elements of one workload into the sets.
// The lookup that crosses the bound gets the addresses that fit (the others
// are removed from its reply); the next ones get SERVFAIL naming the bound.
// Another workload is not affected; expiry makes room again.
func TestWorkloadElementBound(t *testing.T) {
	up := startFakeUpstream(t, manyA(40))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.MaxElementsPerWorkload = 100 })
	total := 0
	for i := 1; i <= 4; i++ {
		r := h.query(t, gatewayIP, "tcp", fmt.Sprintf("big%d.test", i), dns.TypeA, true)
		want := min(40, 100-total)
		switch {
		case want > 0 && (r.Rcode != dns.RcodeSuccess || len(r.Answer) != want):
			t.Fatalf("lookup %d: rcode %s, %d records; want %d", i, dns.RcodeToString[r.Rcode], len(r.Answer), want)
		case want == 0 && (r.Rcode != dns.RcodeServerFailure || ede(r) == nil || !strings.Contains(ede(r).ExtraText, "max-elements-per-workload")):
			t.Fatalf("lookup %d beyond the bound: want SERVFAIL naming max-elements-per-workload, got %v", i, r)
		}
		set := setDsts(t, h.sets, setName(ruleApis, ipset.IPv4))
		for ip := range replyAddrs(r) {
			if !set[ip] {
				t.Fatalf("lookup %d: reply carries %v, which is not in the set", i, ip)
			}
		}
		total += want
	}
	if n := len(pairs(t, h.sets, setName(ruleApis, ipset.IPv4))); n != 100 {
		t.Errorf("set holds %d elements, want the bound 100", n)
	}
	if st := h.srv.Stats(); st.IPsOverWorkloadCap != 60 {
		t.Errorf("over workload cap %d, want 60 (20 + 40)", st.IPsOverWorkloadCap)
	}
	if evs := h.rep.find(event.AnswerCapped); len(evs) != 2 || evs[0].Reason != ReasonMaxElementsPerWorkload || dropped(evs[0]) != 20 || evs[0].Response != "NOERROR" || evs[1].Response != "SERVFAIL" {
		t.Errorf("capped events %+v", evs)
	}
	// Another workload has a bound of its own.
	if r := h.query(t, gateway1, "tcp", "big4.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 40 {
		t.Fatalf("other workload: %v", r)
	}
	// After the entries expired and the sweep ran, the workload resolves again.
	h.clock.Advance(time.Hour)
	h.srv.sweep()
	if r := h.query(t, gatewayIP, "tcp", "big9.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 40 {
		t.Fatalf("after expiry: rcode %s, %d records", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
}

// countingSets counts the Applies and the largest one.
type countingSets struct {
	*fake.Manager
	applies, largest int
}

func (c *countingSets) Apply(ctx context.Context, ops ...ipset.Op) error {
	n := 0
	for _, op := range ops {
		n += len(op.Elements)
	}
	c.applies++
	c.largest = max(c.largest, n)
	return c.Manager.Apply(ctx, ops...)
}

// TestRestoreBoundedAndBatched: a checkpoint holding more than the bounds (a
// previous release, or lowered bounds) restores at most MaxIPsPerName per
// name and MaxElementsPerWorkload per workload, counts the rest, and writes
// the kernel sets in Applies of at most restoreBatch elements.
func TestRestoreBoundedAndBatched(t *testing.T) {
	clock := &testClock{now: time.Unix(1_700_000_000, 0)}
	sets := &countingSets{Manager: newSets(t)}
	eng := loadEngine(t)
	srv, err := New(Config{Upstreams: []string{"127.0.0.1:53"}, MaxIPsPerName: 5000, MaxElementsPerWorkload: 12000},
		Deps{Engine: eng, Sets: sets, SetNamer: setName, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cp := Checkpoint{Version: CheckpointVersion, Format: CheckpointFormat}
	exp := clock.now.Add(time.Hour)
	for name := range 4 {
		for i := range 6000 {
			cp.Entries = append(cp.Entries, CheckpointEntry{Workload: "payments/gateway-0", Name: fmt.Sprintf("big%d.test.", name),
				IP: netip.AddrFrom4([4]byte{10, byte(name), byte(i >> 8), byte(i)}), Expires: exp})
		}
	}
	n, err := srv.Restore(context.Background(), cp)
	if err != nil {
		t.Fatal(err)
	}
	// 5,000 of big0 (name cap), 5,000 of big1, then 2,000 of big2 (12,000 elements).
	if n != 12000 {
		t.Errorf("restored %d, want 12000", n)
	}
	if got := len(pairs(t, sets, setName(ruleApis, ipset.IPv4))); got != 12000 {
		t.Errorf("set holds %d, want 12000", got)
	}
	if st := srv.Stats(); st.IPsOverNameCap != 2000 || st.IPsOverWorkloadCap != 10000 {
		t.Errorf("over name cap %d, over workload cap %d; want 2000, 10000", st.IPsOverNameCap, st.IPsOverWorkloadCap)
	}
	if sets.largest > restoreBatch || sets.applies < 2 {
		t.Errorf("%d applies, largest %d elements; want batches of at most %d", sets.applies, sets.largest, restoreBatch)
	}
}
