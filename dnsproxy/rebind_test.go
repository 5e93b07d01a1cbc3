package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
)

// rebindUpstream answers A and AAAA queries from a table; names not in it
// get NODATA.
func rebindUpstream(w dns.ResponseWriter, q *dns.Msg) {
	table := map[string][]string{
		"meta.test.":                            {"169.254.169.254"},
		"loop.test.":                            {"127.0.0.1", "127.9.9.9"},
		"zero.test.":                            {"0.0.0.0"},
		"mixed.test.":                           {"169.254.169.254", "198.51.100.5"},
		"node.test.":                            {"192.0.2.1"},
		"svc.test.":                             {"10.96.0.5"},
		"allowed.test.":                         {"169.254.10.10"},
		"ll6.test.":                             {"fe80::1"},
		"loop6.test.":                           {"::1"},
		"mapped6.test.":                         {"::ffff:127.0.0.1"},
		"ok6.test.":                             {"2001:db8::5"},
		"kubernetes.default.svc.cluster.local.": {"10.96.0.1"},
		"loop.default.svc.cluster.local.":       {"127.0.0.1"},
	}
	r := new(dns.Msg)
	r.SetReply(q)
	qn := strings.ToLower(q.Question[0].Name)
	for _, s := range table[qn] {
		ip := net.ParseIP(s)
		hdr := dns.RR_Header{Name: q.Question[0].Name, Class: dns.ClassINET, Ttl: 60}
		switch {
		case q.Question[0].Qtype == dns.TypeA && ip.To4() != nil && !strings.Contains(s, ":"):
			hdr.Rrtype = dns.TypeA
			r.Answer = append(r.Answer, &dns.A{Hdr: hdr, A: ip})
		case q.Question[0].Qtype == dns.TypeAAAA && strings.Contains(s, ":"):
			hdr.Rrtype = dns.TypeAAAA
			r.Answer = append(r.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip})
		}
	}
	w.WriteMsg(r)
}

// rebindCounts is an Observer.Rebinding that counts per range.
type rebindCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *rebindCounts) add(rng string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[rng]++
}

func (c *rebindCounts) get(rng string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[rng]
}

// TestRebindingAddressesDropped: addresses of the rebinding ranges are
// dropped from answers (loopback, link-local, unspecified, IPv4-mapped
// loopback, the node's address, the cluster CIDR), are in no set, an answer
// left without address is NODATA with EDE 15, legitimate addresses of the
// same answer are kept and programmed, --rebind-allow exceptions and
// cluster-domain names keep what they may, and each answer with drops is a
// dns.rebinding.blocked event and counted — on a cache miss and on a cache
// hit (the fast path leaves such answers to the slow path).
func TestRebindingAddressesDropped(t *testing.T) {
	up := startFakeUpstream(t, rebindUpstream)
	counts := &rebindCounts{m: map[string]int{}}
	h := start(t, []string{up.addr}, func(c *Config, d *Deps) {
		c.RebindNodeAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.1")}
		c.RebindClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
		c.RebindAllow = []netip.Prefix{netip.MustParsePrefix("169.254.10.0/24")}
		d.Observer.Rebinding = counts.add
	})
	cases := []struct {
		name   string
		qtype  uint16
		keep   []string // addresses answered
		ranges []string // ranges dropped
	}{
		{"meta.test", dns.TypeA, nil, []string{RebindLinkLocal}},
		{"loop.test", dns.TypeA, nil, []string{RebindLoopback, RebindLoopback}},
		{"zero.test", dns.TypeA, nil, []string{RebindUnspecified}},
		{"mixed.test", dns.TypeA, []string{"198.51.100.5"}, []string{RebindLinkLocal}},
		{"node.test", dns.TypeA, nil, []string{RebindNode}},
		{"svc.test", dns.TypeA, nil, []string{RebindCluster}},
		{"allowed.test", dns.TypeA, []string{"169.254.10.10"}, nil},
		{"ll6.test", dns.TypeAAAA, nil, []string{RebindLinkLocal}},
		{"loop6.test", dns.TypeAAAA, nil, []string{RebindLoopback}},
		{"mapped6.test", dns.TypeAAAA, nil, []string{RebindLoopback}},
		{"ok6.test", dns.TypeAAAA, []string{"2001:db8::5"}, nil},
		{"kubernetes.default.svc.cluster.local", dns.TypeA, []string{"10.96.0.1"}, nil},
		{"loop.default.svc.cluster.local", dns.TypeA, nil, []string{RebindLoopback}},
	}
	want := map[string]int{}
	for round := 0; round < 2; round++ { // miss, then cache hit
		for _, c := range cases {
			r := h.query(t, gatewayIP, "udp", c.name, c.qtype, true)
			var got []string
			for _, a := range answerAddrsOf(r) {
				got = append(got, a.String())
			}
			if r.Rcode != dns.RcodeSuccess || !slices.Equal(got, c.keep) {
				t.Errorf("round %d %s: %s %v, want NOERROR %v", round, c.name, dns.RcodeToString[r.Rcode], got, c.keep)
			}
			e := ede(r)
			switch {
			case c.keep == nil && (e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.HasPrefix(e.ExtraText, "egressd: rebinding: ")):
				t.Errorf("round %d %s: EDE %v, want Blocked (rebinding)", round, c.name, e)
			case c.keep != nil && e != nil:
				t.Errorf("round %d %s: unexpected EDE %v", round, c.name, e)
			}
			if c.keep == nil && len(r.Answer) != 0 {
				t.Errorf("round %d %s: answer section %v, want empty (NODATA)", round, c.name, r.Answer)
			}
			for _, rng := range c.ranges {
				want[rng]++
			}
		}
	}
	for _, rng := range RebindRanges {
		if counts.get(rng) != want[rng] {
			t.Errorf("range %s: counted %d, want %d", rng, counts.get(rng), want[rng])
		}
	}
	withDrops := 0
	for _, c := range cases {
		if len(c.ranges) > 0 {
			withDrops++
		}
	}
	evs := h.rep.find(event.RebindingBlocked)
	if len(evs) != 2*withDrops {
		t.Errorf("%d rebinding events, want %d", len(evs), 2*withDrops)
	}
	for _, ev := range evs {
		if ev.Workload != "payments/gateway-0" || !strings.HasPrefix(ev.Reason, "rebinding-") || ev.Attrs[AttrRebindDropped] == "" {
			t.Errorf("event %+v", ev)
		}
		if ev.QName == "meta.test." && (ev.Reason != "rebinding-link-local" || !strings.HasPrefix(ev.Attrs[AttrRebindDropped], "169.254.169.254 (link-local)")) {
			t.Errorf("meta.test event %+v", ev)
		}
	}
	if n := h.srv.Stats().RebindDropped; n != uint64(sumCounts(want)) {
		t.Errorf("Stats.RebindDropped %d, want %d", n, sumCounts(want))
	}
	// Only the legitimate addresses reached the sets.
	got4 := pairs(t, h.sets, setName(ruleApis, ipset.IPv4))
	got6 := pairs(t, h.sets, setName(ruleApis, ipset.IPv6))
	if len(got4) != 2 || len(got6) != 1 {
		t.Errorf("apis sets v4 %v v6 %v, want 198.51.100.5 and 169.254.10.10 (allowed), 2001:db8::5", got4, got6)
	}
	for p := range got4 {
		if !strings.HasSuffix(p, " 198.51.100.5") && !strings.HasSuffix(p, " 169.254.10.10") {
			t.Errorf("set element %s", p)
		}
	}
}

// TestRebindingOff: --rebind-allow 0.0.0.0/0,::/0 turns the protection off.
func TestRebindingOff(t *testing.T) {
	up := startFakeUpstream(t, rebindUpstream)
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) {
		c.RebindAllow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	})
	r := h.query(t, gatewayIP, "udp", "meta.test", dns.TypeA, false)
	if a := answerAddrsOf(r); len(a) != 1 || a[0].String() != "169.254.169.254" {
		t.Errorf("answer %v, want 169.254.169.254 with the protection off", a)
	}
}

func answerAddrsOf(m *dns.Msg) []netip.Addr {
	var out []netip.Addr
	for _, a := range answerAddrs(m) {
		out = append(out, a.ip)
	}
	return out
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestRestoreDropsRebindingAddresses: a checkpoint entry (written by a
// release without rebinding protection) whose address is in a rebinding
// range is neither tracked nor written back.
func TestRestoreDropsRebindingAddresses(t *testing.T) {
	up := startFakeUpstream(t, rebindUpstream)
	h := start(t, []string{up.addr}, nil)
	exp := h.clock.Now().Add(time.Minute)
	cp := Checkpoint{Version: CheckpointVersion, Format: CheckpointFormat, Entries: []CheckpointEntry{
		{Workload: "payments/gateway-0", Name: "meta.test.", IP: netip.MustParseAddr("169.254.169.254"), Expires: exp},
		{Workload: "payments/gateway-0", Name: "mixed.test.", IP: netip.MustParseAddr("198.51.100.5"), Expires: exp},
	}}
	n, err := h.srv.Restore(context.Background(), cp)
	if err != nil || n != 1 {
		t.Fatalf("restored %d (%v), want 1", n, err)
	}
	got := pairs(t, h.sets, setName(ruleApis, ipset.IPv4))
	if _, ok := got["127.0.0.2 . 198.51.100.5"]; !ok || len(got) != 1 {
		t.Errorf("apis set after restore %v", got)
	}
}
