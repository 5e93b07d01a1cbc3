package dnsproxy

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/dnsproxy/tunnel"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy/manifest"
)

// slowQuery runs m through the listeners' message path without the UDP fast
// path (handleWire → ServeDNS).
func slowQuery(t *testing.T, h *harness, from netip.Addr, m *dns.Msg) *dns.Msg {
	t.Helper()
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := h.srv.handleWire(wire, netip.AddrPortFrom(from, 40000), false)
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		t.Fatal(err)
	}
	return r
}

// canon is a reply without its ID, for comparisons.
func canon(m *dns.Msg) string {
	c := m.Copy()
	c.Id = 0
	c.Compress = false
	return c.String()
}

func TestFastPathRepliesEqualSlowPath(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	type tc struct {
		from  netip.Addr
		name  string
		qtype uint16
		edns  bool
		do    bool
		cd    bool
		size  uint16
	}
	var cases []tc
	for _, from := range []netip.Addr{unknownIP, gatewayIP, runnerIP} {
		for _, name := range []string{"api.test.", "API.Test.", "www.test.", "nx.test.", "short.test.", "txt.test.", "onlyv4.test."} {
			for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT} {
				cases = append(cases,
					tc{from: from, name: name, qtype: qt},
					tc{from: from, name: name, qtype: qt, edns: true, size: 1232},
					tc{from: from, name: name, qtype: qt, edns: true, do: true, cd: true, size: 4096})
			}
		}
	}
	cases = append(cases, tc{from: unknownIP, name: "big.test.", qtype: dns.TypeA, edns: true, size: 4096},
		tc{from: unknownIP, name: "big.test.", qtype: dns.TypeA}) // truncated: slow path
	msg := func(c tc) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(c.name, c.qtype)
		m.Id = 0x1234
		m.CheckingDisabled = c.cd
		if c.edns {
			m.SetEdns0(c.size, c.do)
		}
		return m
	}
	for _, c := range cases {
		exchangeFrom(c.from, "udp", h.addr, msg(c)) // fill the cache
	}
	before := h.srv.fast.hits.Load()
	for _, c := range cases {
		fast, err := exchangeFrom(c.from, "udp", h.addr, msg(c))
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if fast.Id != 0x1234 {
			t.Errorf("%+v: id %x", c, fast.Id)
		}
		if fast.Question[0].Name != c.name {
			t.Errorf("%+v: question %q, want the client's spelling", c, fast.Question[0].Name)
		}
		slow := slowQuery(t, h, c.from, msg(c))
		if canon(fast) != canon(slow) {
			t.Errorf("%+v:\nfast path:\n%s\nslow path:\n%s", c, canon(fast), canon(slow))
		}
	}
	if n := h.srv.fast.hits.Load() - before; n < uint64(len(cases))/2 {
		t.Errorf("fast path served %d of %d", n, len(cases))
	}
}

func TestFastPathKeepsPolicyPerWorkload(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	// Cached for a client without policy...
	for i := 0; i < 2; i++ {
		if r := h.query(t, unknownIP, "udp", "xmr.minepool.test", dns.TypeA, true); r.Rcode != dns.RcodeNameError || ede(r) != nil {
			t.Fatalf("unknown client: %v", r)
		}
		h.query(t, unknownIP, "udp", "api.test", dns.TypeA, true)
	}
	// ...still blocked for a workload, with EDE and an event, every time.
	for i := 0; i < 3; i++ {
		r := h.query(t, runnerIP, "udp", "xmr.minepool.test", dns.TypeA, true)
		if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked {
			t.Fatalf("runner: %v", r)
		}
	}
	if n := len(h.rep.find(event.LookupBlocked)); n != 3 {
		t.Errorf("%d blocked events, want 3", n)
	}
	// A policy change applies to cached answers at once.
	h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, true)
	if r := h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("gateway: %v", r)
	}
	objs, err := manifest.Decode("deny-api", strings.NewReader(`apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-api}
spec:
  tier: Admin
  priority: 5
  mode: Enforce
  subject:
    namespaceSelector: {}
  egress:
  - name: api
    action: Deny
    to:
    - fqdn: {matchName: api.test}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := objs[0].Apply(h.eng.Store()); err != nil {
		t.Fatal(err)
	}
	if r := h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, true); r.Rcode != dns.RcodeNameError || ede(r) == nil {
		t.Fatalf("gateway after deny-api: %v", r)
	}
	// Allowed and audit events are reported for fast-path hits too.
	h.query(t, gatewayIP, "udp", "txt.test", dns.TypeTXT, true)
	h.query(t, gatewayIP, "udp", "txt.test", dns.TypeTXT, true)
	if n := len(h.rep.find(event.LookupAudit)); n != 2 {
		t.Errorf("%d audit events, want 2", n)
	}
	evs := h.rep.find(event.LookupAllowed)
	if len(evs) < 4 || evs[len(evs)-1].QName != "txt.test." || evs[len(evs)-1].Workload != "payments/gateway-0" ||
		evs[len(evs)-1].Client != "127.0.0.2" || evs[len(evs)-1].Response != "NOERROR" || evs[len(evs)-1].QType != "TXT" {
		t.Errorf("allowed events: %+v", evs)
	}
	if h.srv.fast.hits.Load() == 0 {
		t.Error("fast path unused")
	}
}

// expirySets records, per pair, when its kernel entry expires on the
// resolver's clock.
type expirySets struct {
	ipset.Manager
	clock  *testClock
	mu     sync.Mutex
	expiry map[string]time.Time
	writes int
}

func (s *expirySets) Apply(ctx context.Context, ops ...ipset.Op) error {
	now := s.clock.Now()
	s.mu.Lock()
	s.writes++
	for _, op := range ops {
		for _, e := range op.Elements {
			k := e.Src.String() + " " + e.Prefix.Addr().String()
			if exp := now.Add(e.Timeout); exp.After(s.expiry[k]) {
				s.expiry[k] = exp
			}
		}
	}
	s.mu.Unlock()
	return s.Manager.Apply(ctx, ops...)
}

// The fast path skips set writes while the entries written last outlive the
// reply; a kernel entry never expires before the TTL of a reply sent.
func TestFastPathSetEntriesOutliveReplies(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 30))
	var sets *expirySets
	h := start(t, []string{up.addr}, func(c *Config, d *Deps) {
		c.MinSetTTL, c.SetGrace = 1*time.Second, 4*time.Second
		sets = &expirySets{Manager: d.Sets, clock: nil, expiry: map[string]time.Time{}}
		d.Sets = sets
	})
	sets.clock = h.clock
	queries := 0
	for step := 0; step < 200; step++ {
		r := h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, step%2 == 0)
		queries++
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("step %d: %v", step, r)
		}
		now := h.clock.Now()
		sets.mu.Lock()
		exp := sets.expiry["127.0.0.2 192.0.2.1"]
		sets.mu.Unlock()
		ttl := time.Duration(r.Answer[0].Header().Ttl) * time.Second
		if exp.Before(now.Add(ttl)) {
			t.Fatalf("step %d: kernel entry expires at +%v, reply TTL %v", step, exp.Sub(now), ttl)
		}
		if margin := exp.Sub(now.Add(ttl)); margin < 2*time.Second {
			t.Fatalf("step %d: entry outlives the reply by %v only, want ≥ grace/2", step, margin)
		}
		h.clock.Advance(time.Duration(1+step%3) * time.Second)
	}
	// 200 queries over ~400s: a cache entry lives 30s, so ~14 entries; one
	// miss write and at most a few refreshes each, not one per query.
	if sets.writes > 60 || sets.writes < 10 {
		t.Errorf("%d set writes for %d queries", sets.writes, queries)
	}
	if h.srv.fast.hits.Load() == 0 {
		t.Error("fast path unused")
	}
}

// fakeTunnel counts observed lookups and quarantines names on demand.
type fakeTunnel struct {
	mu       sync.Mutex
	observed map[string]int
	blocked  map[string]bool
}

func (f *fakeTunnel) Blocked(_, qname string) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[qname], "egressd: tunnel suspected"
}

func (f *fakeTunnel) Check(key, qname string, _ uint16) tunnel.Verdict {
	b, _ := f.Blocked(key, qname)
	return tunnel.Verdict{Blocked: b}
}

func (f *fakeTunnel) Pair(string, string) (string, float64) { return "", 0 }

func (f *fakeTunnel) Observe(_, qname string, _ uint16, _, _ int) tunnel.Verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.observed[qname]++
	return tunnel.Verdict{}
}

// Tunnel detection sees cache hits too, and a quarantined name stays refused
// when cached.
func TestFastPathFeedsTunnelDetection(t *testing.T) {
	up := startCoreDNS(t)
	tun := &fakeTunnel{observed: map[string]int{}, blocked: map[string]bool{}}
	h := start(t, []string{up}, func(_ *Config, d *Deps) { d.Tunnel = tun })
	for i := 0; i < 5; i++ {
		h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, true)
	}
	tun.mu.Lock()
	n := tun.observed["api.test."]
	tun.blocked["api.test."] = true
	tun.mu.Unlock()
	if n != 5 {
		t.Errorf("%d lookups observed, want 5", n)
	}
	if r := h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, true); r.Rcode != dns.RcodeRefused {
		t.Errorf("quarantined: %v", r)
	}
	if h.srv.fast.hits.Load() == 0 {
		t.Error("fast path unused")
	}
}
