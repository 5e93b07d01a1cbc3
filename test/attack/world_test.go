package attack

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestWorld checks the harness itself: an allowed lookup from the pod (UDP and
// TCP) is answered and its address lands in an FQDN set and is reachable; a
// lookup no rule allows is blocked with an EDE, an audit line, a metric and a
// /status count; the kernel sets are read back.
func TestWorld(t *testing.T) {
	w := New(t, Config{
		Zone: `api.world.test. 60 IN A 192.0.2.10
evil.world.test. 60 IN A 192.0.2.10
`,
		Policies: `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-api, namespace: builds}
spec:
  podSelector: {}
  egress:
  - name: api
    action: Allow
    to:
    - fqdn: {matchName: api.world.test}
    ports: [{port: 80, protocol: TCP}]
`,
	})
	a := w.StartAgent(AgentOptions{})
	pod := w.Pods[0]
	ext := netip.MustParseAddr("192.0.2.10")

	if got := w.FQDNSetsWith(ext); len(got) != 0 {
		t.Fatalf("address in FQDN sets %v before any lookup", got)
	}
	if w.Connect(pod, ext, 80) {
		t.Fatalf("connection to %v before any lookup went through", ext)
	}
	for _, network := range []string{"udp", "tcp"} {
		r := w.Ask(pod, network, "api.world.test", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(AnswerAddrs(r), []netip.Addr{ext}) {
			t.Fatalf("%s allowed lookup: %v", network, r)
		}
	}
	if got := w.FQDNSetsWith(ext); len(got) != 1 {
		t.Fatalf("allowed answer in FQDN sets %v, want one", got)
	}
	if !w.Connect(pod, ext, 80) {
		t.Fatalf("connection to %v after the allowed lookup failed", ext)
	}

	r := w.Ask(pod, "udp", "evil.world.test", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
		t.Fatalf("blocked lookup: %v", r)
	}
	if e := EDE(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked {
		t.Fatalf("blocked lookup EDE %v", e)
	}
	line := a.WaitAudit(AuditEvent("dns.lookup.blocked", "evil.world.test"))
	if line == nil || line["workload"] != DefaultPod || line["client"] != pod.IPv4.String() {
		t.Fatalf("audit line %v; all: %v", line, a.AuditLines())
	}
	// The counters are updated after the reply: wait for the third (5 s at most).
	var n float64
	for i := 0; i < 100 && n < 3; i++ {
		if n = a.Metric("egressd_dns_queries_total"); n < 3 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n < 3 {
		t.Fatalf("egressd_dns_queries_total %v, want >= 3\n%s", n, a.Metrics())
	}
	// /status counts the same FQDN set elements as the kernel holds.
	var fromStatus int
	sets, _ := a.Status()["sets"].([]any)
	for _, s := range sets {
		s, _ := s.(map[string]any)
		if name, _ := s["name"].(string); strings.HasPrefix(name, "fq_") {
			n, _ := s["elements"].(float64)
			fromStatus += int(n)
		}
	}
	if k := w.FQDNElements(); fromStatus != k || k == 0 {
		t.Fatalf("/status counts %d FQDN set elements, the kernel holds %d", fromStatus, k)
	}
	a.StopAgent()
}

// TestWorldWithoutPolicies: a Config without policies starts the agent on an
// empty --policies directory (the pod is unrestricted), and WritePolicies
// writes into it: the deny is then applied.
func TestWorldWithoutPolicies(t *testing.T) {
	w := New(t, Config{Zone: "pool.minepool.test. 60 IN A 192.0.2.66\n"})
	a := w.StartAgent(AgentOptions{})
	pod := w.Pods[0]
	if r := w.Ask(pod, "udp", "pool.minepool.test", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("no policies: pool.minepool.test %s, want NOERROR", Rcode(r))
	}
	w.WritePolicies(denyMiningPolicies)
	blocked := false
	for i := 0; i < 100 && !blocked; i++ { // the agent reloads every 2 s
		r, err := Query(pod.NS, ResolverAddr, "udp", "pool.minepool.test", dns.TypeA)
		if err == nil && r.Rcode == dns.RcodeNameError && EDE(r) != nil && EDE(r).InfoCode == dns.ExtendedErrorCodeBlocked {
			blocked = true
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !blocked {
		t.Fatalf("after WritePolicies(deny): pool.minepool.test not blocked; /status %v", a.Status()["sync"])
	}
}
