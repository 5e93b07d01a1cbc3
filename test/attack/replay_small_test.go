package attack

import (
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// The smaller items of issue 17, replayed one per test. Each asserts the fixed
// behaviour and is skipped until its fix lands; its owner removes the skip.

// smallZone: ok.world.test is answered by the root zone, whose NS (ns.test.)
// and glue CoreDNS adds to every positive answer.
const smallZone = `ok.world.test. 60 IN A 192.0.2.10
`

const allowWorldPolicies = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-world, namespace: builds}
spec:
  podSelector: {}
  egress:
  - name: world
    action: Allow
    to:
    - fqdn: {matchPattern: "*.world.test"}
    ports: [{port: 80, protocol: TCP}]
`

// TestReplayOPTFormerr: RFC 6891 §6.1.1 — a query with two OPT records, or an
// OPT whose owner is not the root, gets FORMERR. Before (main 8ff4d7d) both
// were answered NOERROR with the address.
func TestReplayOPTFormerr(t *testing.T) {
	w := New(t, Config{Zone: smallZone, Policies: allowWorldPolicies})
	w.StartAgent(AgentOptions{})
	pod := w.Pods[0]
	twoOPT := new(dns.Msg)
	twoOPT.SetQuestion("ok.world.test.", dns.TypeA)
	twoOPT.SetEdns0(1232, false)
	twoOPT.SetEdns0(1232, false)
	nonRoot := new(dns.Msg)
	nonRoot.SetQuestion("ok.world.test.", dns.TypeA)
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: "world.test.", Rrtype: dns.TypeOPT}}
	opt.SetUDPSize(1232)
	nonRoot.Extra = append(nonRoot.Extra, opt)
	for name, m := range map[string]*dns.Msg{"two OPT records": twoOPT, "OPT owner world.test.": nonRoot} {
		if name == "two OPT records" && len(m.Extra) != 2 {
			t.Fatalf("the query carries %d OPT records", len(m.Extra))
		}
		r, err := Exchange(pod.NS, &dns.Client{Net: "udp", Timeout: 5 * time.Second}, m, ResolverAddr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %s answer %v", name, Rcode(r), AnswerAddrs(r))
		if r.Rcode != dns.RcodeFormatError {
			t.Errorf("%s: %s, want FORMERR", name, Rcode(r))
		}
	}
}

// TestReplayStripSections: the upstream's NS records and glue are not passed
// to the pod with a positive answer. Before (main 8ff4d7d) the pod got the
// root zone's NS record (". NS ns.test.") in the authority section.
func TestReplayStripSections(t *testing.T) {
	w := New(t, Config{Zone: smallZone, Policies: allowWorldPolicies})
	w.StartAgent(AgentOptions{})
	r := w.Ask(w.Pods[0], "udp", "ok.world.test", dns.TypeA)
	var extra []dns.RR
	for _, rr := range r.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	t.Logf("ok.world.test: %s answer %v authority %v additional %v", Rcode(r), AnswerAddrs(r), r.Ns, extra)
	if r.Rcode != dns.RcodeSuccess || len(AnswerAddrs(r)) != 1 {
		t.Fatalf("ok.world.test: %v", r)
	}
	if len(r.Ns) != 0 || len(extra) != 0 {
		t.Errorf("positive answer carries authority %v and additional %v", r.Ns, extra)
	}
}

// TestReplayMalformedMetric: junk datagrams and stray responses sent to the
// resolver are counted in egressd_dns_malformed_total. Before (main 8ff4d7d)
// /metrics had no such metric.
func TestReplayMalformedMetric(t *testing.T) {
	w := New(t, Config{Zone: smallZone, Policies: allowWorldPolicies})
	a := w.StartAgent(AgentOptions{})
	resp := new(dns.Msg)
	resp.SetQuestion("ok.world.test.", dns.TypeA)
	resp.Response = true
	stray, err := resp.Pack()
	if err != nil {
		t.Fatal(err)
	}
	const sent = 10
	err = w.Pods[0].Do(func() error {
		c, err := net.Dial("udp", ResolverAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range sent {
			p := []byte("\x00\x01junk")
			if i%2 == 1 {
				p = stray
			}
			if _, err := c.Write(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A valid query after the junk: once it is answered, the junk before it
	// on the same socket has been read.
	w.Ask(w.Pods[0], "udp", "ok.world.test", dns.TypeA)
	m := a.Metrics()
	t.Logf("egressd_dns_malformed_total present: %v, sum %v", strings.Contains(m, "egressd_dns_malformed_total"), MetricValue(m, "egressd_dns_malformed_total"))
	if got := MetricValue(m, "egressd_dns_malformed_total"); got < sent {
		t.Errorf("egressd_dns_malformed_total = %v after %d junk datagrams", got, sent)
	}
}

// TestReplayUpstreamDown: with every upstream silent, the agent says so in
// its log (once) and /readyz stops answering 200. Before (main 8ff4d7d)
// /readyz stayed 200 and the log said nothing while queries got SERVFAIL.
func TestReplayUpstreamDown(t *testing.T) {
	w := New(t, Config{Zone: smallZone, Policies: allowWorldPolicies})
	w.StartSilent("127.0.0.1:5399")
	// --upstream-down-grace (default 10s) shortened to keep the test short.
	a := w.StartAgent(AgentOptions{Upstreams: []string{"127.0.0.1:5399"}, NoWait: true, Extra: []string{"--upstream-down-grace", "1s"}})
	for i := 0; !strings.Contains(a.Log(), "egressd ready"); i++ {
		if i == 300 {
			t.Fatalf("agent not ready:\n%s", a.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r, err := Query(w.Pods[0].NS, ResolverAddr, "udp", "ok.world.test", dns.TypeA)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	// Down after 2 failed probes (1 s apart), then the grace: poll up to 20 s.
	code, _, err := a.Get("/readyz")
	for i := 0; code == http.StatusOK && i < 200; i++ {
		time.Sleep(100 * time.Millisecond)
		code, _, err = a.Get("/readyz")
	}
	upstreamLines := regexp.MustCompile(`(?m)^.*level=(WARN|ERROR).*upstream.*$`).FindAllString(a.Log(), -1)
	t.Logf("ok.world.test: %s; /readyz %d %v; WARN/ERROR lines naming the upstream: %q", Rcode(r), code, err, upstreamLines)
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("ok.world.test with the upstream silent: %s, want SERVFAIL", Rcode(r))
	}
	if code == http.StatusOK {
		t.Errorf("/readyz 200 with every upstream down")
	}
	if len(upstreamLines) == 0 {
		t.Errorf("no WARN/ERROR log line about the upstream:\n%s", a.Log())
	}
}

// TestReplayHandoverENOTSUP: a plain SIGTERM (no successor) logs no
// "operation not supported" warning. Before (main 8ff4d7d) every stop logged
// `handover: operation not supported` on this kernel.
func TestReplayHandoverENOTSUP(t *testing.T) {
	w := New(t, Config{Zone: smallZone, Policies: allowWorldPolicies})
	a := w.StartAgent(AgentOptions{})
	w.Ask(w.Pods[0], "udp", "ok.world.test", dns.TypeA)
	a.StopAgent()
	lines := regexp.MustCompile(`(?m)^.*level=(WARN|ERROR).*not supported.*$`).FindAllString(a.Log(), -1)
	t.Logf("WARN/ERROR lines with \"not supported\" after SIGTERM: %q", lines)
	if len(lines) != 0 {
		t.Errorf("SIGTERM logged %q", lines)
	}
}

// TestReplayHTTPNonLoopback: --http-addr on a node address an off-node host
// reaches (192.0.2.1) without a bearer token. The agent must either refuse to
// start or refuse /status to a request without the token. Before (main
// 8ff4d7d) it started and served /status (policies, workloads, blocked names)
// to the external host.
func TestReplayHTTPNonLoopback(t *testing.T) {
	w := New(t, Config{Zone: smallZone, Policies: allowWorldPolicies})
	addr := net.JoinHostPort(w.External.NodeIPv4.String(), "9464")
	a := w.StartAgent(AgentOptions{HTTPAddr: addr, NoWait: true})
	for i := 0; !strings.Contains(a.Log(), "egressd ready"); i++ {
		select {
		case <-a.Exited:
			t.Logf("the agent refused to start: %v\n%s", a.Cmd.ProcessState, netmodel.Tail(a.Log(), 2000))
			return
		default:
		}
		if i == 300 {
			t.Fatalf("agent neither ready nor exited:\n%s", a.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := netmodel.HTTPClient(w.External.NS, 5*time.Second).Get("http://" + addr + "/status")
	if err != nil {
		t.Logf("external host: /status: %v", err)
		return
	}
	resp.Body.Close()
	t.Logf("external host: GET /status on %s without a token: %d", addr, resp.StatusCode)
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Errorf("/status served to an off-node host without a token: %d", resp.StatusCode)
	}
}
