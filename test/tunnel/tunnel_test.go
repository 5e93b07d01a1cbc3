package tunnel

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// payload is what each client tries to move through the tunnel.
const payload = 8 << 10

// The bound of the issue: a tunnel is caught within 5 data queries or 1 KB
// leaked.
const maxDataQueries, maxLeakedBytes = 5, 1024

// alertOf waits for the first dns.tunnel.suspected audit line of workload and
// checks that it names the workload and the registered domain.
func (w *world) alertOf(workload string) map[string]any {
	w.t.Helper()
	var ev map[string]any
	waitFor(60*time.Second, func() bool {
		for _, e := range w.auditEvents("dns.tunnel.suspected") {
			if e["workload"] == workload {
				ev = e
				return true
			}
		}
		return false
	})
	if ev == nil {
		w.t.Fatalf("no dns.tunnel.suspected event for %s; audit: %v", workload, w.auditEvents("dns.tunnel.suspected"))
	}
	if ev["domain"] != zoneName || ev["qname"] == nil || ev["reason"] == nil || ev["features"] == nil {
		w.t.Fatalf("dns.tunnel.suspected: %v", ev)
	}
	if score, _ := ev["score"].(float64); score < 1 {
		w.t.Fatalf("dns.tunnel.suspected with score %v", ev["score"])
	}
	return ev
}

// checkBound checks what got out before the alert against the bound.
func (w *world) checkBound(what string, l leak) {
	w.t.Helper()
	if l.dataQueries > maxDataQueries && l.bytes > maxLeakedBytes {
		w.t.Errorf("%s: %d data queries and %d bytes got out (bound: %d data queries or %d bytes)", what, l.dataQueries, l.bytes, maxDataQueries, maxLeakedBytes)
	}
}

// checkAlerted: the alerting query reached dns2tcpd (Alert lets it through);
// what got out up to it is within the bound.
func (w *world) checkAlerted(ev map[string]any) leak {
	w.t.Helper()
	l, found := w.leakedUpTo(ev["qname"].(string))
	if !found {
		w.t.Fatalf("the alerting query %v never reached dns2tcpd", ev["qname"])
	}
	w.t.Logf("Alert: dns2tcp caught after %d queries at the tunnel server (%d carrying data, %d payload bytes) up to the alerting one; score %v, reason %v, features %v",
		l.queries, l.dataQueries, l.bytes, ev["score"], ev["reason"], ev["features"])
	w.checkBound("before the alert", l)
	return l
}

// checkStopped: under Block the query that crossed the threshold is refused
// and so is every later lookup of the domain by the workload: the tunnel
// moves nothing more (the sink stays short of the payload), what got out in
// all is within the bound, lookups of the domain are REFUSED with EDE 18 and
// other names still resolve.
func (w *world) checkStopped(c *client, ev map[string]any) leak {
	w.t.Helper()
	if ev["response"] != "REFUSED" {
		w.t.Errorf("dns.tunnel.suspected under Block answered %v, want REFUSED (the crossing query is refused)", ev["response"])
	}
	var blocked map[string]any
	waitFor(30*time.Second, func() bool {
		for _, e := range w.auditEvents("dns.tunnel.blocked") {
			if e["workload"] == c.pod.Name {
				blocked = e
				return true
			}
		}
		return false
	})
	if blocked == nil || blocked["response"] != "REFUSED" || blocked["domain"] != zoneName {
		w.t.Fatalf("dns.tunnel.blocked for %s: %v", c.pod.Name, blocked)
	}
	// dns2tcpc retries for its answer timeout (3 s); give it two rounds.
	time.Sleep(7 * time.Second)
	l := w.leakedTotal()
	got := w.sinks[c.i].n.Load()
	if _, found := w.leakedUpTo(ev["qname"].(string)); found {
		w.t.Errorf("the query that crossed the threshold reached dns2tcpd")
	}
	w.t.Logf("Block: %d queries reached dns2tcpd in all (%d carrying data, %d payload bytes); the sink received %d of %d bytes; score %v, reason %v, features %v",
		l.queries, l.dataQueries, l.bytes, got, payload, ev["score"], ev["reason"], ev["features"])
	w.checkBound("in all under Block", l)
	if got >= payload || got != int64(l.bytes) {
		w.t.Errorf("sink received %d bytes (payload %d, %d bytes sent through dns2tcpd)", got, payload, l.bytes)
	}
	r, err := exchange(c.pod.NS, resolverAddr, "probe."+zoneName, dns.TypeTXT)
	if err != nil {
		w.t.Fatal(err)
	}
	if r.Rcode != dns.RcodeRefused {
		w.t.Fatalf("lookup of the quarantined domain: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	e := ede(r)
	if e == nil || e.InfoCode != dns.ExtendedErrorCodeProhibited {
		w.t.Fatalf("REFUSED without EDE 18: %v", r)
	}
	w.t.Logf("lookup of probe.%s: REFUSED, EDE %d %q", zoneName, e.InfoCode, e.ExtraText)
	r, err = exchange(c.pod.NS, resolverAddr, "www.example.org", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		w.t.Fatalf("benign lookup after the block: %v %v", r, err)
	}
	return l
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

// TestDNS2TCPAlert: with --tunnel-detection Alert the tunnel works (the
// whole payload reaches the sink) and is reported: a dns.tunnel.suspected
// audit line names the workload and tunnel.example, the metric counts it.
func TestDNS2TCPAlert(t *testing.T) {
	w := newWorld(t, "apps/exfil-0")
	w.startAgent("", "--tunnel-detection", "Alert")
	c := w.startClient(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := c.send(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !waitFor(120*time.Second, func() bool { return w.sinks[0].n.Load() >= payload }) {
		t.Fatalf("tunnel moved %d of %d bytes", w.sinks[0].n.Load(), payload)
	}
	ev := w.alertOf(c.pod.Name)
	w.checkAlerted(ev)
	total := w.leakedTotal()
	t.Logf("Alert: the sink received all %d bytes in %d queries (%d with data)", payload, total.queries, total.dataQueries)
	if n := len(w.auditEvents("dns.tunnel.blocked")); n != 0 {
		t.Errorf("%d dns.tunnel.blocked events with Alert", n)
	}
	if m := w.metric("egressd_tunnel_suspected_total"); m < 1 {
		t.Errorf("egressd_tunnel_suspected_total = %v", m)
	}
}

// TestDNS2TCPBlock: with --tunnel-detection Block the tunnel is stopped.
func TestDNS2TCPBlock(t *testing.T) {
	w := newWorld(t, "apps/exfil-0")
	w.startAgent("", "--tunnel-detection", "Block")
	c := w.startClient(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := c.send(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w.checkStopped(c, w.alertOf(c.pod.Name))
	if m := w.metric("egressd_tunnel_suspected_total"); m < 2 {
		t.Errorf("egressd_tunnel_suspected_total = %v, want the suspected and blocked events", m)
	}
}

// TestDNS2TCPBlockByPolicy: the node default is Alert, a FirewallPolicy sets
// spec.tunnelDetection: Block for namespace apps (in a standalone policy
// directory). The tunnel of apps/exfil-0 is stopped; the same tunnel from
// other/exfil-1 is only reported and keeps moving data.
func TestDNS2TCPBlockByPolicy(t *testing.T) {
	w := newWorld(t, "apps/exfil-0", "other/exfil-1")
	w.startAgent(`apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: quarantine-dns-tunnels, namespace: apps}
spec:
  podSelector: {}
  tunnelDetection: Block
`, "--tunnel-detection", "Alert")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c := w.startClient(0)
	conn, err := c.send(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w.checkStopped(c, w.alertOf(c.pod.Name))
	c.proc.Stop(10 * time.Second)

	// Namespace other: node default Alert.
	c1 := w.startClient(1)
	conn1, err := c1.send(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	defer conn1.Close()
	if !waitFor(120*time.Second, func() bool { return w.sinks[1].n.Load() >= payload }) {
		t.Fatalf("other/exfil-1: tunnel moved %d of %d bytes", w.sinks[1].n.Load(), payload)
	}
	w.alertOf(c1.pod.Name)
	for _, e := range w.auditEvents("dns.tunnel.blocked") {
		if e["workload"] == c1.pod.Name {
			t.Fatalf("other/exfil-1 blocked with the node default Alert: %v", e)
		}
	}
	t.Logf("other/exfil-1 (Alert): all %d bytes through, one alert", payload)
}
