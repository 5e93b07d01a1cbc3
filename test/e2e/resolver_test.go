// Package e2e runs the real egressd binary inside a node network namespace (netmodel)
// with a real upstream (CoreDNS) and real clients in a pod namespace.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/jaeger"
	"github.com/egressd/egressd/test/netmodel"
)

func rcode(r *dns.Msg) string { return dns.RcodeToString[r.Rcode] }

func wantRcode(t *testing.T, r *dns.Msg, want int, what string) {
	t.Helper()
	if r.Rcode != want {
		t.Fatalf("%s: rcode %s, want %s\n%v", what, rcode(r), dns.RcodeToString[want], r)
	}
}

func ede(r *dns.Msg) *dns.EDNS0_EDE {
	if o := r.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// TestResolverPolicy: allow/deny by exact, "*." and "**." patterns, the CNAME chain
// programmed, AAAA, TCP queries, a connection to a never-resolved address dropped, and
// the blocked lookup's span read back from Jaeger with its audit line.
func TestResolverPolicy(t *testing.T) {
	w := newWorld(t)
	jg := jaeger.Start(t)
	w.forward("127.0.0.1:4317", jg.OTLPGRPC)
	a := w.startAgent(agentOpts{extra: []string{"--otlp-endpoint", "127.0.0.1:4317"}})

	t.Run("never-resolved address dropped", func(t *testing.T) {
		if w.connect(extV4) {
			t.Fatalf("connection to %v went through before any lookup", extV4)
		}
		if w.connect(neverAsked) {
			t.Fatalf("connection to %v went through", neverAsked)
		}
	})
	t.Run("exact", func(t *testing.T) {
		r := w.query("udp", "api.example.com", dns.TypeA)
		wantRcode(t, r, dns.RcodeSuccess, "api.example.com")
		if ips := netmodel.AnswerAddrs(r); !slices.Equal(ips, []netip.Addr{extV4}) {
			t.Fatalf("answer %v", ips)
		}
		if !w.connect(extV4) {
			t.Fatalf("connection to %v after the allowed lookup failed", extV4)
		}
		r = w.query("udp", "evil.example.com", dns.TypeA)
		wantRcode(t, r, dns.RcodeNameError, "evil.example.com (no allow rule, lookups enforced)")
		if len(r.Answer) != 0 {
			t.Fatalf("blocked answer carries records: %v", r.Answer)
		}
	})
	t.Run("wildcard", func(t *testing.T) {
		wantRcode(t, w.query("udp", "x.wild.example.com", dns.TypeA), dns.RcodeSuccess, "x.wild (*.wild)")
		wantRcode(t, w.query("udp", "a.b.wild.example.com", dns.TypeA), dns.RcodeNameError, "a.b.wild (two labels, *. matches one)")
		wantRcode(t, w.query("udp", "wild.example.com", dns.TypeA), dns.RcodeNameError, "wild.example.com (the apex, *. needs a label)")
	})
	t.Run("double wildcard", func(t *testing.T) {
		wantRcode(t, w.query("udp", "c.deep.example.com", dns.TypeA), dns.RcodeSuccess, "c.deep (**.deep)")
		wantRcode(t, w.query("udp", "a.b.c.deep.example.com", dns.TypeA), dns.RcodeSuccess, "a.b.c.deep (**.deep)")
		wantRcode(t, w.query("udp", "deep.example.com", dns.TypeA), dns.RcodeNameError, "deep.example.com (the apex)")
	})
	t.Run("CNAME chain", func(t *testing.T) {
		r := w.query("udp", "alias.example.com", dns.TypeA)
		wantRcode(t, r, dns.RcodeSuccess, "alias.example.com")
		var cnames []string
		for _, rr := range r.Answer {
			if c, ok := rr.(*dns.CNAME); ok {
				cnames = append(cnames, c.Target)
			}
		}
		if !slices.Equal(cnames, []string{"mid.example.net.", "edge.example.net."}) || !slices.Equal(netmodel.AnswerAddrs(r), []netip.Addr{cdnEdge}) {
			t.Fatalf("chain: %v", r.Answer)
		}
		if !w.connect(cdnEdge) {
			t.Fatalf("connection to the chain's final A %v failed", cdnEdge)
		}
		if w.connect(neverAsked) {
			t.Fatalf("connection to %v (same subnet, never answered) went through", neverAsked)
		}
	})
	t.Run("AAAA", func(t *testing.T) {
		r := w.query("udp", "api.example.com", dns.TypeAAAA)
		wantRcode(t, r, dns.RcodeSuccess, "api.example.com AAAA")
		if ips := netmodel.AnswerAddrs(r); !slices.Equal(ips, []netip.Addr{extV6}) {
			t.Fatalf("AAAA answer %v", ips)
		}
		if !w.connect(extV6) {
			t.Fatalf("connection to %v after the AAAA lookup failed", extV6)
		}
	})
	t.Run("TCP", func(t *testing.T) {
		out := w.dig("+tcp", "+tries=1", "+time=5", "c.deep.example.com", "A")
		if digStatus(out) != "NOERROR" || !strings.Contains(out, "192.0.2.10") {
			t.Fatalf("dig +tcp allowed name:\n%s", out)
		}
		out = w.dig("+tcp", "+tries=1", "+time=5", "evil.example.com", "A")
		if digStatus(out) != "NXDOMAIN" {
			t.Fatalf("dig +tcp blocked name:\n%s", out)
		}
		r := w.query("tcp", "api.example.com", dns.TypeAAAA)
		wantRcode(t, r, dns.RcodeSuccess, "api.example.com AAAA over TCP")
	})
	t.Run("blocked lookup span and audit line", func(t *testing.T) {
		r := w.query("udp", "pool.minepool.com", dns.TypeA)
		wantRcode(t, r, dns.RcodeNameError, "pool.minepool.com")
		if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(e.ExtraText, "deny-mining") {
			t.Fatalf("EDE: %v", e)
		}
		want := map[string]string{
			"egressd.workload":   "builds/runner-0",
			"k8s.namespace.name": "builds",
			"client.address":     w.pod.IPv4.String(),
			"dns.question.name":  "pool.minepool.com.",
			"dns.question.type":  "A",
			"egressd.policy":     "ClusterFirewallPolicy/deny-mining",
			"egressd.rule":       "mining-pools",
			"egressd.tier":       "Admin",
			"dns.response.code":  "NXDOMAIN",
		}
		sp := jg.WaitForSpan(t, "egressd", "dns.lookup.blocked", 30*time.Second, func(s jaeger.Span) bool {
			return s.TagString("dns.question.name") == "pool.minepool.com." || s.TagString("dns.question.name") == "pool.minepool.com"
		})
		var qname string
		for k, v := range want {
			got := sp.TagString(k)
			if k == "dns.question.name" {
				qname = got
				if strings.TrimSuffix(got, ".") == strings.TrimSuffix(v, ".") {
					continue
				}
			}
			if got != v {
				t.Errorf("span attribute %s = %q, want %q", k, got, v)
			}
		}
		reason := sp.TagString("egressd.reason")
		if reason == "" {
			t.Errorf("span has no egressd.reason: %v", sp.Tags)
		}
		t.Logf("span %s: reason %q", sp.SpanID, reason)
		// The matching audit line carries the same fields.
		var line map[string]any
		for i := 0; i < 100 && line == nil; i++ {
			for _, l := range a.auditLines() {
				if l["event"] == "dns.lookup.blocked" && l["qname"] == qname {
					line = l
				}
			}
			if line == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if line == nil {
			t.Fatalf("no audit line for the blocked lookup; lines: %v", a.auditLines())
		}
		for k, v := range map[string]string{
			"workload": "builds/runner-0", "client": w.pod.IPv4.String(), "qname": qname, "qtype": "A",
			"policy": "ClusterFirewallPolicy/deny-mining", "rule": "mining-pools", "tier": "Admin", "reason": reason,
		} {
			if fmt.Sprint(line[k]) != v {
				t.Errorf("audit %s = %v, want %q (line %v)", k, line[k], v, line)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"])); err != nil {
			t.Errorf("audit time %v: %v", line["time"], err)
		}
	})
}

// forward makes listen (inside the node) reach to (in the test's namespace) through
// the test process: the node's agent exports to a backend that runs outside the node.
func (w *world) forward(listen, to string) {
	ln, err := netmodel.ListenTCP(w.node.NS, listen)
	if err != nil {
		w.t.Fatal(err)
	}
	netmodel.ServeTCP(w.t, ln, netmodel.ForwardTo(to))
}

// TestUpstreamFailure: every upstream down → SERVFAIL within the query timeout; the
// first upstream down → answers from the second.
func TestUpstreamFailure(t *testing.T) {
	w := newWorld(t)
	t.Run("all down: SERVFAIL", func(t *testing.T) {
		a := w.startAgent(agentOpts{upstream: silentAddr, dataplane: "none"})
		defer a.stop()
		start := time.Now()
		r := w.query("udp", "api.example.com", dns.TypeA) // client timeout 8s > the 5s query timeout
		wantRcode(t, r, dns.RcodeServerFailure, "every upstream silent")
		t.Logf("SERVFAIL after %s (query timeout 5s)", time.Since(start).Round(time.Millisecond))
		out := w.dig("+tries=1", "+time=10", "c.deep.example.com")
		if digStatus(out) != "SERVFAIL" {
			t.Fatalf("dig:\n%s", out)
		}
	})
	t.Run("first down: failover", func(t *testing.T) {
		a := w.startAgent(agentOpts{upstream: silentAddr + "," + upstreamAddr, dataplane: "none"})
		defer a.stop()
		for i, name := range []string{"api.example.com", "x.wild.example.com", "c.deep.example.com", "alias.example.com", "a.b.c.deep.example.com"} {
			r := w.query("udp", name, dns.TypeA)
			wantRcode(t, r, dns.RcodeSuccess, fmt.Sprintf("query %d (%s) with the first upstream silent", i, name))
			if len(netmodel.AnswerAddrs(r)) == 0 {
				t.Fatalf("%s: no address: %v", name, r)
			}
		}
		r := w.query("tcp", "api.example.com", dns.TypeAAAA)
		wantRcode(t, r, dns.RcodeSuccess, "AAAA over TCP with the first upstream silent")
	})
}

// raceName is the i-th name of the race zone and the address it resolves to.
func raceName(i int) (string, netip.Addr) {
	a, b := 1+i/250, 1+i%250
	return fmt.Sprintf("r-%d-%d.race.example.com.", a, b), netip.AddrFrom4([4]byte{10, 99, byte(a), byte(b)})
}

// TestConnectRightAfterAnswer: 1,000 times, from inside the pod, resolve a name whose
// address nobody resolved before and connect to it at once. The answer's address must
// be in the kernel set before the reply arrives: zero failures.
func TestConnectRightAfterAnswer(t *testing.T) {
	w := newWorld(t)
	w.startAgent(agentOpts{})
	if w.connect(netip.MustParseAddr("10.99.200.1")) {
		t.Fatal("a never-resolved race address is reachable: the test would prove nothing")
	}
	const n = 1000
	var failures []string
	start := time.Now()
	err := w.pod.Do(func() error {
		c := &dns.Client{Timeout: 5 * time.Second}
		d := net.Dialer{Timeout: 3 * time.Second}
		for i := 0; i < n; i++ {
			name, want := raceName(i)
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			r, _, err := c.Exchange(m, resolverAddr)
			if err != nil || r.Rcode != dns.RcodeSuccess || !slices.Equal(netmodel.AnswerAddrs(r), []netip.Addr{want}) {
				failures = append(failures, fmt.Sprintf("%s: lookup: %v %v", name, err, r))
				continue
			}
			conn, err := d.DialContext(context.Background(), "tcp", netip.AddrPortFrom(want, 80).String())
			if err != nil {
				failures = append(failures, fmt.Sprintf("%s → %v: connect: %v", name, want, err))
				continue
			}
			conn.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resolve-then-connect: %d/%d failures in %s", len(failures), n, time.Since(start).Round(time.Millisecond))
	if len(failures) > 0 {
		t.Fatalf("%d/%d failed; first: %s", len(failures), n, strings.Join(failures[:min(5, len(failures))], "\n"))
	}
}
