package dnsproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/fake"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/coredns"
)

// Test clients (testdata/workloads.yaml).
var (
	gatewayIP = netip.MustParseAddr("127.0.0.2") // payments/gateway-0, also fd00::2
	gateway1  = netip.MustParseAddr("127.0.0.4") // payments/gateway-1, IPv4 only
	runnerIP  = netip.MustParseAddr("127.0.0.3") // builds/runner-0
	unknownIP = netip.MustParseAddr("127.0.0.1") // not a workload
)

const bigCount = 150

// freePort returns a port free for both UDP and TCP on 127.0.0.1 (as far as
// one can tell without holding it).
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// startCoreDNS runs CoreDNS as the authoritative server of the test zone
// (testdata/db.test.tmpl) on 127.0.0.1 and returns its address.
func startCoreDNS(t testing.TB) string {
	t.Helper()
	bin := coredns.Binary(t)
	dir := t.TempDir()
	var big []string
	for i := 1; i <= bigCount; i++ {
		big = append(big, fmt.Sprintf("10.1.%d.%d", i/256, i%256))
	}
	tmpl := template.Must(template.ParseFiles("testdata/db.test.tmpl"))
	var zone bytes.Buffer
	if err := tmpl.Execute(&zone, map[string]any{"Big": big, "BigCount": bigCount}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "db.test"), zone.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		corefile := fmt.Sprintf("test.:%d {\n bind 127.0.0.1\n file %s\n}\n.:%d {\n bind 127.0.0.1\n template IN NS . {\n  answer \". 60 IN NS ns.test.\"\n }\n}\n",
			port, filepath.Join(dir, "db.test"), port)
		if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd := exec.Command(bin, "-conf", filepath.Join(dir, "Corefile"))
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		ready := false
		for i := 0; i < 100 && !ready; i++ {
			select {
			case <-exited:
				i = 100
				continue
			default:
			}
			m := new(dns.Msg)
			m.SetQuestion("api.test.", dns.TypeA)
			c := &dns.Client{Timeout: 200 * time.Millisecond}
			if r, _, err := c.Exchange(m, addr); err == nil && len(r.Answer) == 1 {
				ready = true
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if ready {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return addr
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 2 {
			t.Fatalf("CoreDNS did not start:\n%s", out.String())
		}
	}
}

// loadEngine builds the store and engine of testdata/.
func loadEngine(t testing.TB) *policy.Engine {
	t.Helper()
	objs, err := manifest.DecodeFile("testdata/policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := manifest.LoadWorkloads("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	return policy.NewEngine(store, policy.Options{})
}

// setName is the SetNamer of the tests.
func setName(r policy.RuleRef, f ipset.Family) string {
	return "fqdn-" + policy.RuleID(r) + "-" + f.String()
}

var (
	ruleApis = policy.RuleRef{Policy: policy.PolicyRef{Kind: "FirewallPolicy", Namespace: "payments", Name: "payments"}, Rule: "apis"}
	ruleWWW  = policy.RuleRef{Policy: policy.PolicyRef{Kind: "FirewallPolicy", Namespace: "payments", Name: "payments"}, Rule: "www"}
)

// newSets returns a fake Manager holding the pair sets of the test rules.
func newSets(t testing.TB, opts ...fake.Option) *fake.Manager {
	t.Helper()
	m := fake.New(opts...)
	var specs []ipset.Spec
	for _, r := range []policy.RuleRef{ruleApis, ruleWWW} {
		for _, f := range []ipset.Family{ipset.IPv4, ipset.IPv6} {
			specs = append(specs, ipset.Spec{Name: setName(r, f), Family: f, Kind: ipset.KindAddrPair, Timeout: true})
		}
	}
	if err := m.Ensure(context.Background(), specs...); err != nil {
		t.Fatal(err)
	}
	return m
}

// recorder is an event sink that keeps the events.
type recorder struct{ event.Recorder }

// find returns the events named name.
func (r *recorder) find(name string) []event.Event { return r.Named(name) }

// testClock is a manual clock for Deps.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// harness is a started resolver with its dependencies.
type harness struct {
	srv   *Server
	addr  string
	sets  *fake.Manager
	rep   *recorder
	eng   *policy.Engine
	clock *testClock
}

// start starts a resolver forwarding to upstreams; mutate adjusts the config
// and deps first.
func start(t testing.TB, upstreams []string, mutate func(*Config, *Deps)) *harness {
	t.Helper()
	h := &harness{rep: &recorder{}, eng: loadEngine(t), clock: &testClock{now: time.Unix(1_700_000_000, 0)}}
	h.sets = newSets(t)
	cfg := Config{
		Listen:         []string{"127.0.0.1:0"},
		UDPSockets:     2,
		Upstreams:      upstreams,
		Timeout:        time.Second,
		QueryTimeout:   3 * time.Second,
		HealthInterval: -1,
		// The test clock stands still: token buckets would never refill.
		// Tests of the limits set them.
		RateLimit: -1,
		RRLRate:   -1,
	}
	deps := Deps{Engine: h.eng, Sets: h.sets, SetNamer: setName, Events: h.rep, Now: h.clock.Now}
	if mutate != nil {
		mutate(&cfg, &deps)
	}
	if s, ok := deps.Sets.(*fake.Manager); ok {
		h.sets = s
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	h.srv = srv
	h.addr = srv.Addrs()[0].String()
	return h
}

// query asks the resolver from the client address over net ("udp", "tcp").
func (h *harness) query(t testing.TB, from netip.Addr, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	r, err := h.tryQuery(from, network, name, qtype, edns)
	if err != nil {
		t.Fatalf("query %s %s from %v: %v", name, dns.Type(qtype), from, err)
	}
	return r
}

func (h *harness) tryQuery(from netip.Addr, network, name string, qtype uint16, edns bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	return exchangeFrom(from, network, h.addr, m)
}

// exchangeFrom sends m to addr from a source address.
func exchangeFrom(from netip.Addr, network, addr string, m *dns.Msg) (*dns.Msg, error) {
	var local net.Addr
	if network == "tcp" {
		local = &net.TCPAddr{IP: from.AsSlice()}
	} else {
		local = &net.UDPAddr{IP: from.AsSlice()}
	}
	c := &dns.Client{Net: network, Timeout: 4 * time.Second, UDPSize: 65535, Dialer: &net.Dialer{LocalAddr: local, Timeout: 2 * time.Second}}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// pairs returns the elements of a set as "src . dst" strings.
func pairs(t testing.TB, m ipset.Manager, set string) map[string]time.Duration {
	t.Helper()
	es, err := m.List(context.Background(), set)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Duration{}
	for _, e := range es {
		out[e.String()] = e.Timeout
	}
	return out
}

// fakeUpstream is an in-process DNS server on 127.0.0.1 whose answers a test
// controls (for what a real server will not do: mismatched answers, delays).
type fakeUpstream struct {
	addr    string
	mu      sync.Mutex
	queries map[string]int
	handler func(w dns.ResponseWriter, q *dns.Msg)
}

// listenUDPAndTCP binds UDP and TCP on one free loopback port; the TCP port of
// a free UDP port may be taken, so it retries with another port.
func listenUDPAndTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("no loopback port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

func startFakeUpstream(t testing.TB, handler func(w dns.ResponseWriter, q *dns.Msg)) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{queries: map[string]int{}, handler: handler}
	pc, ln := listenUDPAndTCP(t)
	f.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		if len(q.Question) == 1 {
			f.mu.Lock()
			f.queries[strings.ToLower(q.Question[0].Name)]++
			f.mu.Unlock()
		}
		f.mu.Lock()
		hf := f.handler
		f.mu.Unlock()
		hf(w, q)
	})
	us := &dns.Server{PacketConn: pc, Handler: h}
	ts := &dns.Server{Listener: ln, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	return f
}

func (f *fakeUpstream) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[name]
}

func (f *fakeUpstream) setHandler(h func(w dns.ResponseWriter, q *dns.Msg)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handler = h
}

// answerA answers every A query with one address and ttl.
func answerA(ip string, ttl uint32) func(w dns.ResponseWriter, q *dns.Msg) {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)}}
		}
		w.WriteMsg(r)
	}
}

// blackhole returns a UDP address that reads queries and never answers.
func blackhole(t testing.TB) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// deadAddr returns a UDP address nobody listens on (queries get ICMP port
// unreachable).
func deadAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// ttls returns the TTLs of the answer section.
func ttls(m *dns.Msg) []uint32 {
	var out []uint32
	for _, rr := range m.Answer {
		out = append(out, rr.Header().Ttl)
	}
	return out
}

// ede returns the Extended DNS Error of a reply.
func ede(m *dns.Msg) *dns.EDNS0_EDE {
	if o := m.IsEdns0(); o != nil {
		for _, op := range o.Option {
			if e, ok := op.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}
