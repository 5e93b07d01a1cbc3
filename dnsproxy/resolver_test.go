package dnsproxy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/fake"
	"github.com/egressd/egressd/policy"
)

// gatedSets blocks Apply until released, to observe the order of the set
// write and the reply.
type gatedSets struct {
	ipset.Manager
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	doneAt  time.Time
}

func (g *gatedSets) Apply(ctx context.Context, ops ...ipset.Op) error {
	g.entered <- struct{}{}
	<-g.release
	err := g.Manager.Apply(ctx, ops...)
	g.mu.Lock()
	g.doneAt = time.Now()
	g.mu.Unlock()
	return err
}

func TestAllowedLookupProgramsSetsBeforeReply(t *testing.T) {
	up := startCoreDNS(t)
	sets := newSets(t)
	gate := &gatedSets{Manager: sets, entered: make(chan struct{}, 1), release: make(chan struct{})}
	var obsMu sync.Mutex
	var upCalls, setCalls, queryCalls int
	h := start(t, []string{up}, func(c *Config, d *Deps) {
		d.Sets = gate
		d.Observer = Observer{
			Upstream: func(string, time.Duration, error) { obsMu.Lock(); upCalls++; obsMu.Unlock() },
			SetWrite: func(n int, _ time.Duration, err error) {
				obsMu.Lock()
				setCalls += n
				obsMu.Unlock()
			},
			Query: func(time.Duration, int) { obsMu.Lock(); queryCalls++; obsMu.Unlock() },
		}
	})

	type result struct {
		m  *dns.Msg
		at time.Time
	}
	got := make(chan result, 1)
	go func() {
		m, err := h.tryQuery(gatewayIP, "udp", "api.test", dns.TypeA, true)
		if err != nil {
			t.Error(err)
		}
		got <- result{m, time.Now()}
	}()
	select {
	case <-gate.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the set write never started")
	}
	select {
	case r := <-got:
		t.Fatalf("reply before the set write completed: %v", r.m)
	case <-time.After(300 * time.Millisecond):
	}
	close(gate.release)
	r := <-got
	if r.m == nil || r.m.Rcode != dns.RcodeSuccess || len(r.m.Answer) != 1 {
		t.Fatalf("reply: %v", r.m)
	}
	gate.mu.Lock()
	doneAt := gate.doneAt
	gate.mu.Unlock()
	if !doneAt.Before(r.at) {
		t.Errorf("set write done at %v, reply received at %v", doneAt, r.at)
	}
	// Zone TTL 300 → timeout max(300, MinSetTTL 5) + grace 10 = 310s.
	want := map[string]time.Duration{"127.0.0.2 . 192.0.2.10": 310 * time.Second}
	if p := pairs(t, sets, setName(ruleApis, ipset.IPv4)); !equalTimeouts(p, want) {
		t.Errorf("ipv4 set of rule apis = %v, want %v", p, want)
	}
	if p := pairs(t, sets, setName(ruleWWW, ipset.IPv4)); len(p) != 0 {
		t.Errorf("rule www must not receive api.test: %v", p)
	}
	for _, ttl := range ttls(r.m) {
		if ttl > 310 {
			t.Errorf("reply TTL %d exceeds the timeout written", ttl)
		}
	}
	evs := h.rep.find(event.LookupAllowed)
	if len(evs) != 1 || evs[0].Workload != "payments/gateway-0" || evs[0].Rule != "apis" || evs[0].Response != "NOERROR" {
		t.Errorf("allowed events %+v", evs)
	}
	time.Sleep(50 * time.Millisecond) // Query is observed after the write to the socket
	obsMu.Lock()
	defer obsMu.Unlock()
	if upCalls != 1 || setCalls != 1 || queryCalls != 1 {
		t.Errorf("observer calls: upstream %d, set elements %d, queries %d", upCalls, setCalls, queryCalls)
	}
}

func equalTimeouts(got, want map[string]time.Duration) bool {
	if len(got) != len(want) {
		return false
	}
	for k, w := range want {
		g, ok := got[k]
		// The fake reports remaining time; allow the test's own runtime.
		if !ok || g > w || g < w-5*time.Second {
			return false
		}
	}
	return true
}

func TestCNAMEChainAddressesProgrammedForEveryMatchingRule(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	r := h.query(t, gatewayIP, "udp", "www.test", dns.TypeA, false)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 4 {
		t.Fatalf("www.test A: %v", r)
	}
	// www.test matches both rules ("*.test" and "www.test"); every A of the
	// chain (TTL 30) goes to both: timeout max(30,5)+10 = 40s.
	want := map[string]time.Duration{
		"127.0.0.2 . 192.0.2.20": 40 * time.Second,
		"127.0.0.2 . 192.0.2.21": 40 * time.Second,
	}
	for _, rule := range []string{setName(ruleApis, ipset.IPv4), setName(ruleWWW, ipset.IPv4)} {
		if p := pairs(t, h.sets, rule); !equalTimeouts(p, want) {
			t.Errorf("%s = %v, want %v", rule, p, want)
		}
	}
	// No record of the reply outlives the shortest-lived address (the CNAMEs
	// have TTL 300 in the zone).
	for _, rr := range r.Answer {
		if rr.Header().Ttl > 30 {
			t.Errorf("%v: TTL above the addresses' 30s", rr)
		}
	}
	// AAAA: pairs with the workload's IPv6 address only.
	r = h.query(t, gatewayIP, "udp", "www.test", dns.TypeAAAA, false)
	if len(r.Answer) != 3 {
		t.Fatalf("www.test AAAA: %v", r)
	}
	want6 := map[string]time.Duration{"fd00::2 . 2001:db8::20": 40 * time.Second}
	if p := pairs(t, h.sets, setName(ruleWWW, ipset.IPv6)); !equalTimeouts(p, want6) {
		t.Errorf("ipv6 = %v, want %v", p, want6)
	}
	// A workload with only IPv4 gets no IPv6 pairs, and its own IPv4 pairs.
	h.query(t, gateway1, "udp", "api.test", dns.TypeAAAA, false)
	h.query(t, gateway1, "udp", "api.test", dns.TypeA, false)
	for k := range pairs(t, h.sets, setName(ruleApis, ipset.IPv6)) {
		if k != "fd00::2 . 2001:db8::20" {
			t.Errorf("unexpected ipv6 pair %s (gateway-1 has no IPv6 address)", k)
		}
	}
	if p := pairs(t, h.sets, setName(ruleApis, ipset.IPv4)); p["127.0.0.4 . 192.0.2.10"] == 0 {
		t.Errorf("gateway-1 pair missing: %v", p)
	}
	// The reference model agrees with the kernel sets (RecordLookup hook):
	// gateway-0 may now connect to the addresses of www.test on port 80.
	d := h.eng.Decide(policy.Connection{Src: gatewayIP, Dst: netip.MustParseAddr("192.0.2.21"), Port: 80, Protocol: policy.ProtocolTCP})
	if d.Verdict != policy.Allow || d.Egress.Rule != "www" {
		t.Errorf("engine after lookup: %+v", d.Egress)
	}
	d = h.eng.Decide(policy.Connection{Src: runnerIP, Dst: netip.MustParseAddr("192.0.2.99"), Port: 80, Protocol: policy.ProtocolTCP})
	if d.Verdict != policy.Allow {
		t.Errorf("runner: %+v", d.Egress)
	}
	// Three writes: the AAAA of gateway-1 had nothing to write.
	st := h.srv.Stats()
	if st.SetWrites != 3 || st.SetWriteFailures != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestSetTimeoutIsMinSetTTLPlusGraceForShortTTLs(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, func(c *Config, _ *Deps) { c.MinSetTTL, c.SetGrace = 20*time.Second, 7*time.Second })
	r := h.query(t, gatewayIP, "udp", "short.test", dns.TypeA, false)
	if got := ttls(r); !slices.Equal(got, []uint32{2}) {
		t.Fatalf("TTLs %v, want [2]", got)
	}
	want := map[string]time.Duration{"127.0.0.2 . 192.0.2.30": 27 * time.Second}
	if p := pairs(t, h.sets, setName(ruleApis, ipset.IPv4)); !equalTimeouts(p, want) {
		t.Errorf("got %v, want %v", p, want)
	}
}

func TestSetWriteFailureAnswersServFail(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	h.sets.FailWith(func(op, set string) error { return errors.New("netlink: no buffer space") })
	r := h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, true)
	if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("want SERVFAIL without answer, got %v", r)
	}
	if e := ede(r); e == nil || e.ExtraText != "egressd: firewall set write failed" {
		t.Errorf("EDE %v", e)
	}
	if st := h.srv.Stats(); st.SetWriteFailures != 1 || st.ServFail != 1 {
		t.Errorf("stats %+v", st)
	}
	// The store did not record a lookup whose addresses never reached the kernel.
	h.sets.FailWith(nil)
	if r := h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("after recovery: %v", r)
	}
}

func TestBlockedLookupResponses(t *testing.T) {
	up := startCoreDNS(t)
	for _, tc := range []struct {
		mode  BlockMode
		qtype uint16
		rcode int
		ans   string
	}{
		{BlockNXDomain, dns.TypeA, dns.RcodeNameError, ""},
		{BlockRefused, dns.TypeA, dns.RcodeRefused, ""},
		{BlockSinkhole, dns.TypeA, dns.RcodeSuccess, "0.0.0.0"},
		{BlockSinkhole, dns.TypeAAAA, dns.RcodeSuccess, "::"},
		{BlockSinkhole, dns.TypeTXT, dns.RcodeSuccess, ""},
	} {
		t.Run(string(tc.mode)+"/"+dns.Type(tc.qtype).String(), func(t *testing.T) {
			h := start(t, []string{up}, func(c *Config, _ *Deps) { c.BlockMode = tc.mode })
			r := h.query(t, runnerIP, "udp", "xmr.minepool.test", tc.qtype, true)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			var got string
			for _, rr := range r.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					got = rr.A.String()
				case *dns.AAAA:
					got = rr.AAAA.String()
				}
			}
			if got != tc.ans {
				t.Errorf("answer %q, want %q", got, tc.ans)
			}
			e := ede(r)
			if e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || e.ExtraText != "egressd: blocked by ClusterFirewallPolicy/deny-mining#mining-pools" {
				t.Errorf("EDE %v", e)
			}
			evs := h.rep.find(event.LookupBlocked)
			if len(evs) != 1 {
				t.Fatalf("events %v", h.rep.Events())
			}
			ev := evs[0]
			if ev.Workload != "builds/runner-0" || ev.Client != "127.0.0.3" || ev.QName != "xmr.minepool.test." ||
				ev.Policy != "ClusterFirewallPolicy/deny-mining" || ev.Rule != "mining-pools" || ev.Tier != "Admin" || ev.Reason != "rule" {
				t.Errorf("event %+v", ev)
			}
			if up := h.srv.Stats(); up.UpstreamQueries != 0 || up.Blocked != 1 {
				t.Errorf("a blocked lookup must not be forwarded: %+v", up)
			}
		})
	}
}

func TestBlockedWithoutEDNSHasNoOPT(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	r := h.query(t, runnerIP, "udp", "a.minepool.test", dns.TypeA, false)
	if r.Rcode != dns.RcodeNameError || r.IsEdns0() != nil {
		t.Fatalf("%v", r)
	}
}

func TestLookupsEnforcedBlocksNamesNoRuleAllows(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	r := h.query(t, gatewayIP, "udp", "example.org", dns.TypeA, true)
	if r.Rcode != dns.RcodeNameError {
		t.Fatalf("%v", r)
	}
	if e := ede(r); e == nil || e.ExtraText != "egressd: blocked by FirewallPolicy/payments/payments (lookups-enforced)" {
		t.Errorf("EDE %v", e)
	}
	// Names inside the cluster domain are never blocked by FQDN rules.
	r = h.query(t, gatewayIP, "udp", "kubernetes.default.svc.cluster.local", dns.TypeA, true)
	if r.Rcode == dns.RcodeNameError && ede(r) != nil {
		t.Fatalf("cluster-domain name blocked: %v", r)
	}
	if st := h.srv.Stats(); st.Blocked != 1 {
		t.Errorf("blocked %d", st.Blocked)
	}
}

func TestAuditModeAnswersAndReports(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	r := h.query(t, gatewayIP, "udp", "txt.test", dns.TypeTXT, true)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || ede(r) != nil {
		t.Fatalf("audit must answer normally: %v", r)
	}
	evs := h.rep.find(event.LookupAudit)
	if len(evs) != 1 {
		t.Fatalf("events %+v", h.rep.Events())
	}
	if ev := evs[0]; ev.Policy != "ClusterFirewallPolicy/staged" || ev.Rule != "no-txt" || ev.Workload != "payments/gateway-0" || ev.QType != "TXT" {
		t.Errorf("event %+v", ev)
	}
	if st := h.srv.Stats(); st.Audited != 1 || st.Blocked != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnknownClientResolvedWithoutPolicy(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	for _, name := range []string{"api.test", "xmr.minepool.test", "example.org"} {
		r := h.query(t, unknownIP, "udp", name, dns.TypeA, false)
		if ede(r) != nil || (name == "api.test" && len(r.Answer) != 1) {
			t.Errorf("%s: %v", name, r)
		}
	}
	if n := h.sets.Calls("apply"); n != 0 {
		t.Errorf("%d set writes for an unknown client", n)
	}
	if st := h.srv.Stats(); st.Blocked != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCacheHitNegativeCacheAndClamps(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, func(c *Config, d *Deps) { c.MinTTL, c.MaxTTL = 10*time.Second, 100*time.Second })
	// Clamps: short (TTL 2) → 10, long (86400) → 100.
	if got := ttls(h.query(t, unknownIP, "udp", "short.test", dns.TypeA, false)); !slices.Equal(got, []uint32{10}) {
		t.Errorf("short TTLs %v, want [10]", got)
	}
	if got := ttls(h.query(t, unknownIP, "udp", "long.test", dns.TypeA, false)); !slices.Equal(got, []uint32{100}) {
		t.Errorf("long TTLs %v, want [100]", got)
	}
	// Cache hit with the TTL decremented by the age.
	h.clock.Advance(4 * time.Second)
	r := h.query(t, unknownIP, "udp", "LONG.test", dns.TypeA, false)
	if got := ttls(r); !slices.Equal(got, []uint32{96}) {
		t.Errorf("cached TTLs %v, want [96]", got)
	}
	if r.Question[0].Name != "LONG.test." {
		t.Errorf("the reply must echo the client's spelling: %v", r.Question)
	}
	st := h.srv.Stats()
	if st.CacheHits != 1 || st.UpstreamQueries != 2 {
		t.Errorf("stats %+v", st)
	}
	// Negative: NXDOMAIN cached for min(SOA TTL 300, MINIMUM 60) = 60s.
	r = h.query(t, unknownIP, "udp", "nx.test", dns.TypeA, false)
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Ttl > 60 {
		t.Fatalf("nx: %v", r)
	}
	h.clock.Advance(30 * time.Second)
	r = h.query(t, unknownIP, "udp", "nx.test", dns.TypeA, false)
	if r.Rcode != dns.RcodeNameError || h.srv.Stats().CacheHits != 2 || r.Ns[0].Header().Ttl > 30 {
		t.Errorf("negative cache miss: %v %+v", r, h.srv.Stats())
	}
	// NODATA (api.test has no TXT) is negative too.
	h.query(t, unknownIP, "udp", "api.test", dns.TypeTXT, false)
	h.query(t, unknownIP, "udp", "api.test", dns.TypeTXT, false)
	if st := h.srv.Stats(); st.CacheHits != 3 {
		t.Errorf("NODATA not cached: %+v", st)
	}
	// Expired: fetched again.
	h.clock.Advance(31 * time.Second)
	h.query(t, unknownIP, "udp", "nx.test", dns.TypeA, false)
	if st := h.srv.Stats(); st.CacheHits != 3 {
		t.Errorf("expired answer served: %+v", st)
	}
}

func TestServeStaleWhenUpstreamsFail(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.99", 5))
	h := start(t, []string{f.addr}, func(c *Config, _ *Deps) {
		c.ServeStale, c.StaleTTL = time.Hour, 30*time.Second
		c.Timeout, c.QueryTimeout = 200*time.Millisecond, 500*time.Millisecond
	})
	h.query(t, unknownIP, "udp", "stale.example", dns.TypeA, false)
	h.clock.Advance(10 * time.Second)
	f.setHandler(func(dns.ResponseWriter, *dns.Msg) {}) // silent from now on
	r := h.query(t, unknownIP, "udp", "stale.example", dns.TypeA, false)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(ttls(r), []uint32{30}) {
		t.Fatalf("stale answer: %v", r)
	}
	if st := h.srv.Stats(); st.StaleServed != 1 {
		t.Errorf("stats %+v", st)
	}
	// Without a cached answer: SERVFAIL.
	r = h.query(t, unknownIP, "udp", "other.example", dns.TypeA, true)
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("want SERVFAIL, got %v", r)
	}
	if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeNoReachableAuthority {
		t.Errorf("EDE %v", e)
	}
}

func TestIdenticalQueriesInFlightAreCoalesced(t *testing.T) {
	f := startFakeUpstream(t, nil)
	inner := answerA("192.0.2.7", 60)
	f.setHandler(func(w dns.ResponseWriter, q *dns.Msg) {
		time.Sleep(300 * time.Millisecond)
		inner(w, q)
	})
	h := start(t, []string{f.addr}, nil)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.tryQuery(unknownIP, "udp", "slow.example", dns.TypeA, false)
			if err != nil || len(r.Answer) != 1 {
				t.Errorf("%v %v", r, err)
			}
		}()
	}
	wg.Wait()
	if n := f.count("slow.example."); n != 1 {
		t.Errorf("upstream saw %d queries, want 1", n)
	}
	if st := h.srv.Stats(); st.Coalesced < 15 {
		t.Errorf("coalesced %d", st.Coalesced)
	}
}

func TestFailoverWhenFirstUpstreamIsDown(t *testing.T) {
	up := startCoreDNS(t)
	for name, first := range map[string]string{"refused": deadAddr(t), "silent": blackhole(t)} {
		t.Run(name, func(t *testing.T) {
			h := start(t, []string{first, up}, func(c *Config, _ *Deps) {
				c.Timeout, c.MaxFails, c.HealthInterval = 300*time.Millisecond, 1, time.Hour
				c.CacheSize = -1
			})
			for i := 0; i < 3; i++ {
				r := h.query(t, unknownIP, "udp", "api.test", dns.TypeA, false)
				if len(r.Answer) != 1 {
					t.Fatalf("%v", r)
				}
			}
			health := h.srv.UpstreamHealth()
			if health[first] || !health[up] {
				t.Errorf("health %v", health)
			}
			// Marked down after the first failure: later queries go straight to
			// the healthy upstream.
			if st := h.srv.Stats(); st.UpstreamErrors != 1 || st.UpstreamQueries != 4 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestHealthProbeMarksUpstreamUpAgain(t *testing.T) {
	f := startFakeUpstream(t, func(dns.ResponseWriter, *dns.Msg) {})
	h := start(t, []string{f.addr}, func(c *Config, _ *Deps) {
		c.Timeout, c.QueryTimeout, c.MaxFails, c.HealthInterval = 100*time.Millisecond, 200*time.Millisecond, 1, 50*time.Millisecond
	})
	deadline := time.Now().Add(3 * time.Second)
	for h.srv.UpstreamHealth()[f.addr] && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if h.srv.UpstreamHealth()[f.addr] {
		t.Fatal("a silent upstream stayed up")
	}
	f.setHandler(answerA("192.0.2.1", 60))
	for !h.srv.UpstreamHealth()[f.addr] && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !h.srv.UpstreamHealth()[f.addr] {
		t.Fatal("the probe did not mark the upstream up")
	}
}

func TestTruncatedUpstreamAnswerRetriedOverTCP(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, func(c *Config, _ *Deps) { c.MaxUDPSize = 4096 })
	r := h.query(t, unknownIP, "tcp", "big.test", dns.TypeA, false)
	if len(r.Answer) != bigCount || r.Truncated {
		t.Fatalf("big over TCP: %d answers, tc=%v", len(r.Answer), r.Truncated)
	}
	if st := h.srv.Stats(); st.UpstreamTCPRetries != 1 {
		t.Errorf("stats %+v", st)
	}
	// EDNS0 4096: the whole answer over UDP (from the cache).
	m := new(dns.Msg)
	m.SetQuestion("big.test.", dns.TypeA)
	m.SetEdns0(4096, false)
	r, err := exchangeFrom(unknownIP, "udp", h.addr, m)
	if err != nil || len(r.Answer) != bigCount || r.Truncated {
		t.Fatalf("big over UDP 4096: %v %v", err, r)
	}
	if o := r.IsEdns0(); o == nil || o.UDPSize() != 4096 {
		t.Errorf("OPT %v", o)
	}
	// EDNS0 1232 and no EDNS0 (512): truncated with TC.
	for _, size := range []uint16{1232, 0} {
		m := new(dns.Msg)
		m.SetQuestion("big.test.", dns.TypeA)
		if size > 0 {
			m.SetEdns0(size, false)
		}
		wire := sendRawUDP(t, h.addr, mustPack(t, m))
		max := int(size)
		if max == 0 {
			max = 512
		}
		if len(wire) > max {
			t.Errorf("size %d: reply of %d bytes", size, len(wire))
		}
		r := new(dns.Msg)
		if err := r.Unpack(wire); err != nil || !r.Truncated {
			t.Errorf("size %d: want TC, got %v %v", size, err, r.MsgHdr)
		}
	}
}

func TestMismatchedUpstreamAnswersAreDropped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mangle func(r *dns.Msg)
	}{
		{"id", func(r *dns.Msg) { r.Id++ }},
		{"qname", func(r *dns.Msg) { r.Question[0].Name = "evil.example." }},
		{"qtype", func(r *dns.Msg) { r.Question[0].Qtype = dns.TypeAAAA }},
		{"qclass", func(r *dns.Msg) { r.Question[0].Qclass = dns.ClassCHAOS }},
		{"not-a-response", func(r *dns.Msg) { r.Response = false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := answerA("192.0.2.1", 60)
			f := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
				// A forged answer first (pointing elsewhere), then the real one.
				r := new(dns.Msg)
				r.SetReply(q)
				r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 86400}, A: []byte{6, 6, 6, 6}}}
				tc.mangle(r)
				w.WriteMsg(r)
				w.Write([]byte{1, 2, 3}) // garbage too
				good(w, q)
			})
			h := start(t, []string{f.addr}, nil)
			r := h.query(t, unknownIP, "udp", "victim.example", dns.TypeA, false)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
				t.Fatalf("answer %v", r)
			}
			if st := h.srv.Stats(); st.UpstreamMismatches != 2 {
				t.Errorf("mismatches %d, want 2", st.UpstreamMismatches)
			}
		})
	}
	// Only forged answers: the exchange times out and the query fails.
	f := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		r.Id ^= 0xffff
		w.WriteMsg(r)
	})
	h := start(t, []string{f.addr}, func(c *Config, _ *Deps) { c.Timeout, c.QueryTimeout = 200*time.Millisecond, 400*time.Millisecond })
	if r := h.query(t, unknownIP, "udp", "x.example", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("%v", r)
	}
}

func TestUpstreamQueriesUseFreshIDsAndPorts(t *testing.T) {
	var mu sync.Mutex
	ids, ports := map[uint16]bool{}, map[string]bool{}
	good := answerA("192.0.2.1", 0) // TTL 0: never cached
	f := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
		mu.Lock()
		ids[q.Id] = true
		ports[w.RemoteAddr().String()] = true
		mu.Unlock()
		good(w, q)
	})
	h := start(t, []string{f.addr}, nil)
	for i := 0; i < 20; i++ {
		m := new(dns.Msg)
		m.SetQuestion("id.example.", dns.TypeA)
		m.Id = 4242 // the same client ID every time
		r, err := exchangeFrom(unknownIP, "udp", h.addr, m)
		if err != nil || r.Id != 4242 {
			t.Fatalf("%v %v", r, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) < 18 || ids[4242] && len(ids) < 19 {
		t.Errorf("upstream IDs not random: %d distinct of 20", len(ids))
	}
	if len(ports) < 18 {
		t.Errorf("source ports reused: %d distinct of 20", len(ports))
	}
}

func TestPerClientRateLimit(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, func(c *Config, _ *Deps) { c.RateLimit, c.RateBurst = 5, 5 })
	refused := 0
	for i := 0; i < 20; i++ {
		if r := h.query(t, unknownIP, "udp", "api.test", dns.TypeA, false); r.Rcode == dns.RcodeRefused {
			refused++
		}
	}
	if refused < 10 {
		t.Errorf("%d of 20 refused, want ≥ 10", refused)
	}
	// Another client is not affected.
	if r := h.query(t, runnerIP, "udp", "api.test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("other client: %v", r)
	}
	if st := h.srv.Stats(); st.RateLimited != uint64(refused) {
		t.Errorf("stats %+v", st)
	}
}

func TestConcurrentClientsUnderRace(t *testing.T) {
	up := startCoreDNS(t)
	h := start(t, []string{up}, nil)
	names := []string{"api.test", "www.test", "short.test", "nx.test", "xmr.minepool.test", "txt.test", "example.org"}
	clients := []netip.Addr{gatewayIP, gateway1, runnerIP, unknownIP}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				c := clients[(g+i)%len(clients)]
				n := names[(g*7+i)%len(names)]
				network := "udp"
				if i%5 == 0 {
					network = "tcp"
				}
				if _, err := h.tryQuery(c, network, n, dns.TypeA, i%2 == 0); err != nil {
					t.Errorf("%s from %v: %v", n, c, err)
				}
			}
		}()
	}
	wg.Wait()
	st := h.srv.Stats()
	if st.Queries != 320 || st.SetWriteFailures != 0 {
		t.Errorf("stats %+v", st)
	}
	// Every pair in the sets belongs to a payments workload.
	for _, set := range []string{setName(ruleApis, ipset.IPv4), setName(ruleWWW, ipset.IPv4)} {
		var got []string
		for k := range pairs(t, h.sets, set) {
			got = append(got, k)
		}
		sort.Strings(got)
		for _, k := range got {
			if k[:10] != "127.0.0.2 " && k[:10] != "127.0.0.4 " {
				t.Errorf("%s: unexpected pair %s", set, k)
			}
		}
	}
}

var _ = fake.New
