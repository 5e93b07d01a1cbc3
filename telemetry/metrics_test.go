package telemetry

import (
	"github.com/egressd/egressd/telemetry/event"

	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// allMetrics is the project's metric list (README.md documents each).
var allMetrics = []string{
	"egressd_dns_queries_total",
	"egressd_dns_cache_hits_total",
	"egressd_dns_blocked_total",
	"egressd_dns_upstream_latency_seconds",
	"egressd_dns_set_write_latency_seconds",
	"egressd_dns_set_write_errors_total",
	"egressd_events_total",
	"egressd_audit_dropped_total",
	"egressd_dataplane_apply_seconds",
	"egressd_dataplane_apply_errors_total",
	"egressd_policies",
	"egressd_tunnel_suspected_total",
	"egressd_http_blocked_total",
	"egressd_trace_export_errors_total",
	"egressd_policy_reload_errors_total",
	"egressd_policy_reload_ok",
	"egressd_dns_upstream_up",
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.DNSQuery(ResultBlocked)
	m.DNSCacheHit()
	m.ObserveUpstream(3 * time.Millisecond)
	m.ObserveSetWrite(200*time.Microsecond, errors.New("boom"))
	m.ObserveDataplaneApply(40*time.Millisecond, nil)
	m.ObserveDataplaneApply(40*time.Millisecond, errors.New("boom"))
	m.SetPolicies("FirewallPolicy", "enforced", 3)
	m.AuditDropHook()()
	m.ObservePolicyReload(true)
	m.ObservePolicyReload(false)
	m.ObservePolicyReload(false)
	m.SetUpstreamUp("10.0.0.10:53", true)
	m.SetUpstreamUp("10.0.0.11:53", false)
	ctx := context.Background()
	m.Emit(ctx, blockedEvent(1))
	m.Emit(ctx, event.Event{Name: event.TunnelSuspected})
	m.Emit(ctx, event.Event{Name: event.HTTPBlocked})
	m.Emit(ctx, event.Event{Name: "made.up"})

	body := scrape(t, m)
	for _, name := range allMetrics {
		if !strings.Contains(body, "# HELP "+name+" ") || !strings.Contains(body, "# TYPE "+name+" ") {
			t.Errorf("metric %s missing from /metrics", name)
		}
	}
	for _, want := range []string{
		`egressd_dns_queries_total{result="blocked"} 1`,
		`egressd_dns_queries_total{result="allowed"} 0`,
		`egressd_dns_cache_hits_total 1`,
		`egressd_dns_blocked_total{policy="deny-mining",reason="deny-rule"} 1`,
		`egressd_dns_upstream_latency_seconds_count 1`,
		`egressd_dns_set_write_latency_seconds_count 1`,
		`egressd_dns_set_write_errors_total 1`,
		`egressd_events_total{event="dns.lookup.blocked"} 1`,
		`egressd_events_total{event="dns.tunnel.suspected"} 1`,
		`egressd_events_total{event="dns.lookup.allowed"} 0`,
		`egressd_events_total{event="other"} 1`,
		`egressd_audit_dropped_total 1`,
		`egressd_dataplane_apply_seconds_count 2`,
		`egressd_dataplane_apply_errors_total 1`,
		`egressd_policies{kind="FirewallPolicy",state="enforced"} 3`,
		`egressd_tunnel_suspected_total 1`,
		`egressd_http_blocked_total 1`,
		`egressd_policy_reload_errors_total 2`,
		`egressd_policy_reload_ok 0`,
		`egressd_dns_upstream_up{upstream="10.0.0.10:53"} 1`,
		`egressd_dns_upstream_up{upstream="10.0.0.11:53"} 0`,
		`go_goroutines `,
		`process_start_time_seconds `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
	m.ResetPolicies()
	if strings.Contains(scrape(t, m), `egressd_policies{`) {
		t.Error("ResetPolicies left series")
	}
}

func TestMetricsDocumentedInREADME(t *testing.T) {
	b, err := readFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range allMetrics {
		if !strings.Contains(b, "`"+name) {
			t.Errorf("README.md does not document %s", name)
		}
	}
}

func TestNilSinksAreNoops(t *testing.T) {
	var m *Metrics
	m.DNSQuery(ResultAllowed)
	m.DNSCacheHit()
	m.ObserveUpstream(time.Second)
	m.ObserveSetWrite(time.Second, nil)
	m.ObserveDataplaneApply(time.Second, nil)
	m.SetPolicies("a", "b", 1)
	m.ResetPolicies()
	m.AuditDropHook()()
	m.Emit(context.Background(), blockedEvent(0))
	var a *AuditLog
	a.Emit(context.Background(), blockedEvent(0))
	var s *Spans
	s.Emit(context.Background(), blockedEvent(0))
	NewSpans(nil).Emit(context.Background(), blockedEvent(0))
}

func readFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}
