package dnsproxy

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
)

// Loopback sources of these tests that are no workload (testdata/workloads.yaml).
var (
	servedIP = netip.MustParseAddr("127.0.0.9")  // in ServeUnknown
	lateIP   = netip.MustParseAddr("127.0.0.20") // becomes a workload while its query waits
	otherIP  = netip.MustParseAddr("127.0.0.21")
)

func wantUnknownRefused(t *testing.T, r *dns.Msg, edns bool) {
	t.Helper()
	if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Fatalf("reply %s with %d answers, want REFUSED", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	if !edns {
		return
	}
	if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeProhibited || e.ExtraText != "egressd: unknown client" {
		t.Fatalf("EDE %v, want 18 (Prohibited) \"egressd: unknown client\"", e)
	}
}

func TestUnknownClientRefused(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{f.addr}, func(c *Config, _ *Deps) {
		c.ServeUnknown = []string{servedIP.String()}
		c.UnknownWait = -1
	})

	// Refused over UDP and TCP, with and without EDNS, and never forwarded.
	for _, network := range []string{"udp", "tcp"} {
		for _, edns := range []bool{false, true} {
			wantUnknownRefused(t, h.query(t, unknownIP, network, "ok.example", dns.TypeA, edns), edns)
		}
	}
	if n := f.count("ok.example."); n != 0 {
		t.Fatalf("an unknown client's query reached the upstream %d times", n)
	}
	st := h.srv.Stats()
	if st.UnknownRefused != 4 || st.UnknownWaits != 0 {
		t.Fatalf("stats %+v, want 4 unknown clients refused and no wait", st)
	}
	evs := h.rep.find(event.LookupBlocked)
	if len(evs) != 4 {
		t.Fatalf("%d blocked events, want 4: %+v", len(evs), evs)
	}
	if ev := evs[0]; ev.Reason != ReasonUnknownClient || ev.Workload != "" || ev.Client != unknownIP.String() ||
		ev.QName != "ok.example." || ev.Response != "REFUSED" {
		t.Fatalf("event %+v", ev)
	}

	// A source in ServeUnknown is served without policy (a name the Admin
	// tier denies to every workload is answered), and so is a workload under
	// its policy.
	if r := h.query(t, servedIP, "udp", "pool.minepool.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("served source: %v", r)
	}
	if r := h.query(t, runnerIP, "udp", "pool.minepool.test", dns.TypeA, true); r.Rcode != dns.RcodeNameError {
		t.Fatalf("workload: %s, want NXDOMAIN (blocked)", dns.RcodeToString[r.Rcode])
	}
	if st := h.srv.Stats(); st.UnknownServed != 1 || st.UnknownRefused != 4 {
		t.Fatalf("stats %+v", st)
	}

	// The answer is now cached: the UDP fast path serves the allowed source
	// and leaves the unknown one to the slow path, which refuses it.
	hits := h.srv.fast.hits.Load()
	if r := h.query(t, servedIP, "udp", "pool.minepool.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("served source, cached: %v", r)
	}
	if h.srv.fast.hits.Load() != hits+1 {
		t.Fatalf("the cached answer did not take the fast path")
	}
	wantUnknownRefused(t, h.query(t, unknownIP, "udp", "pool.minepool.test", dns.TypeA, true), true)
	if h.srv.fast.hits.Load() != hits+1 {
		t.Fatalf("the fast path answered an unknown client")
	}
	if st := h.srv.Stats(); st.UnknownServed != 2 || st.UnknownRefused != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnknownClientWaitsForStore(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{f.addr}, func(c *Config, _ *Deps) {
		c.ServeUnknown = []string{ServeUnknownNone}
		c.UnknownWait = time.Hour // released by the store below, not by time
		c.MaxUnknownWaiters = 1
	})
	type result struct {
		r   *dns.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := h.tryQuery(lateIP, "udp", "pool.minepool.test", dns.TypeA, true)
		done <- result{r, err}
	}()
	waitFor(t, "the query waits for the store", func() bool { return h.srv.Stats().UnknownWaits == 1 })

	// While it waits, the cap refuses another unknown source at once.
	wantUnknownRefused(t, h.query(t, otherIP, "udp", "ok.example", dns.TypeA, true), true)
	if st := h.srv.Stats(); st.UnknownWaitsFull != 1 || st.UnknownRefused != 1 {
		t.Fatalf("stats %+v, want one refused without waiting", st)
	}

	// The pod appears: its query is decided under policy (the Admin deny).
	err := h.eng.Store().UpsertWorkload(policy.Workload{Namespace: "builds", Name: "late-0", IPs: []netip.Addr{lateIP}})
	if err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.r.Rcode != dns.RcodeNameError {
		t.Fatalf("waited query: %s, want NXDOMAIN (decided under policy)", dns.RcodeToString[res.r.Rcode])
	}
	if e := ede(res.r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked {
		t.Fatalf("EDE %v, want Blocked", e)
	}
	evs := h.rep.find(event.LookupBlocked)
	if len(evs) != 2 || evs[1].Workload != "builds/late-0" {
		t.Fatalf("events %+v, want the blocked lookup of builds/late-0", evs)
	}
	if st := h.srv.Stats(); st.UnknownRefused != 1 || st.UnknownWaits != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnknownClientWaitEnds(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{f.addr}, func(c *Config, _ *Deps) {
		c.ServeUnknown = []string{ServeUnknownNone}
		c.UnknownWait = 20 * time.Millisecond
	})
	wantUnknownRefused(t, h.query(t, unknownIP, "udp", "ok.example", dns.TypeA, true), true)
	if st := h.srv.Stats(); st.UnknownWaits != 1 || st.UnknownRefused != 1 || st.UnknownServed != 0 {
		t.Fatalf("stats %+v, want one wait, then refused", st)
	}
	if n := f.count("ok.example."); n != 0 {
		t.Fatalf("forwarded %d times", n)
	}
}

func TestNoEngineServesEveryone(t *testing.T) {
	f := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{f.addr}, func(c *Config, d *Deps) {
		c.ServeUnknown = []string{ServeUnknownNone}
		d.Engine, d.Sets = nil, nil
	})
	if r := h.query(t, unknownIP, "udp", "ok.example", dns.TypeA, true); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("plain forwarder: %v", r)
	}
}

func TestServeUnknownNodeAddrs(t *testing.T) {
	s, err := compile(Config{Upstreams: []string{"127.0.0.1"}, ServeUnknown: []string{"node", "10.1.0.0/16", "::ffff:10.2.0.7"}})
	if err != nil {
		t.Fatal(err)
	}
	u := newUnknownClients(s)
	ifaddrs := []net.Addr{
		&net.IPNet{IP: net.ParseIP("192.168.1.5"), Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)},
	}
	reads := 0
	var readErr error
	u.addrs = func() ([]net.Addr, error) { reads++; return ifaddrs, readErr }
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"192.168.1.5", true},  // an address of the node
		{"192.168.1.6", false}, // its subnet is not the node
		{"fe80::1", true},
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"::1", true},
		{"10.1.200.3", true},
		{"10.2.0.7", true},
		{"10.2.0.8", false},
		{"169.254.20.10", false},
	} {
		if got := u.served(netip.MustParseAddr(tc.ip), now); got != tc.want {
			t.Errorf("served(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
	// Misses read the addresses again at most once a second.
	if reads != 1 {
		t.Errorf("read the node's addresses %d times, want 1", reads)
	}
	ifaddrs = append(ifaddrs, &net.IPNet{IP: net.ParseIP("169.254.20.10"), Mask: net.CIDRMask(32, 32)})
	if u.served(netip.MustParseAddr("169.254.20.10"), now.Add(nodeAddrRefresh/2)) {
		t.Errorf("addresses read again within %v", nodeAddrRefresh)
	}
	if !u.served(netip.MustParseAddr("169.254.20.10"), now.Add(nodeAddrRefresh)) {
		t.Errorf("an address added to the node is not served after %v", nodeAddrRefresh)
	}
	// A failed read serves nothing new (fail closed), and is not retried on
	// every miss.
	readErr = errors.New("netlink: no")
	reads = 0
	if u.served(netip.MustParseAddr("192.168.1.7"), now.Add(3*nodeAddrRefresh)) {
		t.Errorf("served after a failed read")
	}
	fresh := newUnknownClients(s)
	fresh.addrs = u.addrs
	for range 3 {
		if fresh.served(netip.MustParseAddr("192.168.1.5"), now) {
			t.Errorf("served while the node's addresses cannot be read")
		}
	}
	if reads != 2 {
		t.Errorf("%d reads of the node's addresses, want 2 (one per resolver and second)", reads)
	}
}

func TestServeUnknownConfig(t *testing.T) {
	for _, tc := range []struct {
		list []string
		err  string
	}{
		{nil, ""},
		{[]string{"none"}, ""},
		{[]string{"node", "10.0.0.0/8", "fd00::/8", "192.0.2.1"}, ""},
		{[]string{"none", "node"}, "excludes"},
		{[]string{"10.0.0.0/33"}, "not a CIDR"},
		{[]string{"::ffff:10.0.0.0/104"}, ""},
		{[]string{"::ffff:0.0.0.0/80"}, "IPv4-mapped"},
		{[]string{"nodes"}, "not an address"},
		{[]string{strings.Repeat("x", 10000)}, "…"},
	} {
		err := Config{Upstreams: []string{"127.0.0.1"}, ServeUnknown: tc.list}.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.list, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || len(err.Error()) > 300):
			t.Errorf("%v: error %v, want one with %q", tc.list, err, tc.err)
		}
	}
}
