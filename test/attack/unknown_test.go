package attack

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// waitMetric polls the agent's /metrics until name reaches at least min (no
// bound of its own: the test's deadline is).
func waitMetric(t *testing.T, a *Agent, name string, min float64) {
	t.Helper()
	for a.Metric(name) < min {
		if t.Context().Err() != nil {
			t.Fatalf("%s never reached %v", name, min)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUnknownClientWaitsForWorkloads: a pod whose address is not in the
// workloads file yet waits for it (--unknown-client-wait) and is then decided
// under its policies; one that never appears is refused with the EDE, an
// audit line and the metrics; loopback and the node's own addresses in the
// node namespace are served without policy.
func TestUnknownClientWaitsForWorkloads(t *testing.T) {
	w := New(t, Config{
		Zone:     unknownZone,
		Policies: denyMiningPolicies,
		Pods:     []netmodel.PodSpec{{Name: DefaultPod}, {Name: "builds/late-0"}, {Name: "builds/ghost-0"}},
		Unlisted: []string{"builds/late-0", "builds/ghost-0"},
	})
	a := w.StartAgent(AgentOptions{Extra: []string{"--reload-interval", "100ms", "--unknown-client-wait", "5s"}})
	late, ghost := w.Pod("builds/late-0"), w.Pod("builds/ghost-0")

	// The late pod asks before the workloads file lists it.
	type result struct {
		r   *dns.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		m := new(dns.Msg)
		m.SetQuestion("pool.minepool.test.", dns.TypeA)
		m.SetEdns0(1232, false)
		r, err := Exchange(late.NS, &dns.Client{Net: "udp", Timeout: 20 * time.Second}, m, ResolverAddr)
		done <- result{r, err}
	}()
	waitMetric(t, a, "egressd_dns_unknown_waits_total", 1)
	// Now the file lists it (the agent reloads every 100ms, well inside the 5s wait).
	w.WriteWorkloads(w.workloadsFor([]string{"builds/ghost-0"}))
	res := <-done
	if res.err != nil {
		t.Fatalf("late pod: %v", res.err)
	}
	t.Logf("late pod %v, listed while its query waited: pool.minepool.test %s EDE %v", late.IPv4, Rcode(res.r), EDE(res.r))
	if res.r.Rcode != dns.RcodeNameError {
		t.Fatalf("late pod: %s, want NXDOMAIN (the Admin deny, decided for the pod once listed)", Rcode(res.r))
	}
	if e := EDE(res.r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked {
		t.Fatalf("late pod: EDE %v, want 15 Blocked", e)
	}
	if ev := a.WaitAudit(AuditEvent("dns.lookup.blocked", "pool.minepool.test")); ev == nil || ev["workload"] != "builds/late-0" {
		t.Fatalf("late pod: audit %v, want the blocked lookup of builds/late-0", ev)
	}

	// The ghost pod never appears: refused after the wait, over UDP and TCP.
	for _, network := range []string{"udp", "tcp"} {
		m := new(dns.Msg)
		m.SetQuestion("ok.world.test.", dns.TypeA)
		m.SetEdns0(1232, false)
		r, err := Exchange(ghost.NS, &dns.Client{Net: network, Timeout: 20 * time.Second}, m, ResolverAddr)
		if err != nil {
			t.Fatalf("ghost pod over %s: %v", network, err)
		}
		if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Fatalf("ghost pod over %s: %s %v, want REFUSED", network, Rcode(r), AnswerAddrs(r))
		}
		if e := EDE(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeProhibited || e.ExtraText != "egressd: unknown client" {
			t.Fatalf("ghost pod over %s: EDE %v, want 18 \"egressd: unknown client\"", network, e)
		}
	}
	ev := a.WaitAudit(func(l map[string]any) bool {
		return AuditEvent("dns.lookup.blocked", "ok.world.test")(l) && l["client"] == ghost.IPv4.String()
	})
	if ev == nil || ev["reason"] != "unknown-client" || ev["workload"] != "" || ev["response"] != "REFUSED" {
		t.Fatalf("ghost pod: audit %v, want dns.lookup.blocked reason unknown-client, no workload, REFUSED", ev)
	}

	// Node processes: loopback and the node's own addresses are served
	// without policy (the Admin deny does not apply to them).
	node := w.Node.NS
	for _, src := range []string{"127.0.0.1", "127.0.0.53", ResolverIP} {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
		m := new(dns.Msg)
		m.SetQuestion("pool.minepool.test.", dns.TypeA)
		r, err := Exchange(node, c, m, ResolverAddr)
		if err != nil {
			t.Fatalf("node process from %s: %v", src, err)
		}
		if r.Rcode != dns.RcodeSuccess || len(AnswerAddrs(r)) != 1 || AnswerAddrs(r)[0] != netip.MustParseAddr("192.0.2.66") {
			t.Fatalf("node process from %s: %s %v, want NOERROR 192.0.2.66 (no policy)", src, Rcode(r), AnswerAddrs(r))
		}
	}

	metrics := a.Metrics()
	got := map[string]float64{}
	for _, name := range []string{"egressd_dns_unknown_waits_total", "egressd_dns_unknown_refused_total", "egressd_dns_unknown_served_total", "egressd_dns_unknown_waits_full_total"} {
		got[name] = MetricValue(metrics, name)
	}
	t.Logf("metrics: %v", got)
	if got["egressd_dns_unknown_waits_total"] != 3 || got["egressd_dns_unknown_refused_total"] != 2 ||
		got["egressd_dns_unknown_served_total"] != 3 || got["egressd_dns_unknown_waits_full_total"] != 0 {
		t.Fatalf("metrics %v, want 3 waits (late, ghost ×2), 2 refused (ghost), 3 served (node)", got)
	}
	if !strings.Contains(metrics, "# HELP egressd_dns_unknown_refused_total") {
		t.Fatalf("egressd_dns_unknown_refused_total is not described")
	}
}

// TestUnknownClientFloodIsBounded: a pod missing from the workloads file
// floods the resolver with queries for fresh names (each one would wait for
// the store). At most --unknown-client-waiters of them wait at once; the rest
// are refused at once, and a known pod resolving meanwhile gets every
// answer.
func TestUnknownClientFloodIsBounded(t *testing.T) {
	w := New(t, Config{
		Zone:     unknownZone,
		Policies: denyMiningPolicies,
		Pods:     []netmodel.PodSpec{{Name: DefaultPod}, {Name: "builds/ghost-0"}},
		Unlisted: []string{"builds/ghost-0"},
	})
	a := w.StartAgent(AgentOptions{Extra: []string{"--unknown-client-waiters", "64"}})
	ghost, victim := w.Pod("builds/ghost-0"), w.Pods[0]

	const flood = 4000 // datagrams, about 2,000 a second for 2 s
	floodDone := make(chan error, 1)
	go func() {
		floodDone <- ghost.Do(func() error {
			c, err := net.Dial("udp", ResolverAddr)
			if err != nil {
				return err
			}
			defer c.Close()
			go func() { // read and discard the refusals
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
			start := time.Now()
			for i := range flood {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("n%d.world.test.", i), dns.TypeA)
				b, err := m.Pack()
				if err != nil {
					return err
				}
				if _, err := c.Write(b); err != nil {
					return err
				}
				if d := time.Duration(i+1) * time.Second / 2000; time.Since(start) < d {
					time.Sleep(d - time.Since(start))
				}
			}
			time.Sleep(500 * time.Millisecond) // the last waits end (200 ms)
			return nil
		})
	}()
	// The victim resolves while the flood runs.
	var lat []time.Duration
	for i := 0; ; i++ {
		select {
		case err := <-floodDone:
			if err != nil {
				t.Fatal(err)
			}
			goto done
		default:
		}
		start := time.Now()
		r := w.Ask(victim, "udp", "ok.world.test", dns.TypeA)
		lat = append(lat, time.Since(start))
		if r.Rcode != dns.RcodeSuccess || len(AnswerAddrs(r)) != 1 {
			t.Fatalf("victim query %d during the flood: %s %v", i, Rcode(r), AnswerAddrs(r))
		}
		time.Sleep(10 * time.Millisecond)
	}
done:
	slices.Sort(lat)
	m := a.Metrics()
	waits, full, refused := MetricValue(m, "egressd_dns_unknown_waits_total"), MetricValue(m, "egressd_dns_unknown_waits_full_total"), MetricValue(m, "egressd_dns_unknown_refused_total")
	t.Logf("flood of %d fresh names from an unknown pod: %v waited (200 ms each), %v refused without waiting (64 waiters), %v refused in all; rate-limited %v",
		flood, waits, full, refused, MetricValue(m, "egressd_dns_limited_total"))
	t.Logf("victim: %d queries answered during the flood, latency p50 %v p99 %v max %v", len(lat), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	if full == 0 {
		t.Errorf("the waiter cap never refused a query: %v waits", waits)
	}
	// At most 64 wait at once and each wait lasts 200 ms: over the ~2.5 s of
	// the flood, no more than 64 × 2.5 / 0.2 = 800 can have waited.
	if waits > 64*(2.5+1)/0.2 {
		t.Errorf("%v queries waited: the cap of 64 waiters did not hold", waits)
	}
	if refused != waits+full {
		t.Errorf("refused %v != waited %v + refused at once %v (an unknown query was served?)", refused, waits, full)
	}
}
