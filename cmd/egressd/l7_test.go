package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/egressd/egressd/egress/l7"
	"github.com/egressd/egressd/telemetry"
	"github.com/egressd/egressd/telemetry/event"
)

func TestTransparentProxyAddrs(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		v4, v6 string // "" for none
		err    bool
	}{
		{args: nil, v4: "169.254.20.10:15001"},
		{args: []string{"--transparent-proxy-addr", "[fd00::a9fe:140a]:15001"}, v6: "[fd00::a9fe:140a]:15001"},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:1,[fd00::1]:2"}, v4: "10.0.0.1:1", v6: "[fd00::1]:2"},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:1", "--transparent-proxy-addr", "[fd00::1]:2"}, v4: "10.0.0.1:1", v6: "[fd00::1]:2"},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:1,10.0.0.2:1"}, err: true},
		{args: []string{"--transparent-proxy-addr", "[::ffff:10.0.0.1]:1"}, err: true},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1"}, err: true},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:0"}, err: true},
	} {
		c, perr := parseFlags(append([]string{"--policies", "p", "--transparent-proxy"}, tc.args...), nil)
		if (perr != nil) != tc.err {
			t.Errorf("%v: parseFlags: %v, want error=%v", tc.args, perr, tc.err)
			continue
		}
		if tc.err {
			continue // rejected at flag parsing, before the proxy starts
		}
		v4, v6, err := c.transparentAddrs()
		if verr := c.validateL7(); (verr != nil) != tc.err || (err != nil) != tc.err {
			t.Errorf("%v: errors %v / %v, want error=%v", tc.args, err, verr, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		if fmtAP(v4) != tc.v4 || fmtAP(v6) != tc.v6 {
			t.Errorf("%v: %v %v, want %q %q", tc.args, v4, v6, tc.v4, tc.v6)
		}
		a := &agent{cfg: c}
		if got, want := len(a.l7Exempt()), btoi(tc.v4 != "")+btoi(tc.v6 != ""); got != want {
			t.Errorf("%v: %d exempt addresses, want %d", tc.args, got, want)
		}
	}
}

func fmtAP(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestReportL7: a blocked request becomes an http.egress.blocked line and
// span, an allowed one that Audit-mode policies would block an
// http.egress.audit line and span with the audit verdict; a plain allowed
// request nothing.
func TestReportL7(t *testing.T) {
	var buf bytes.Buffer
	audit, err := telemetry.NewAuditLog(telemetry.AuditOptions{Stdout: &buf})
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	a := &agent{log: slog.New(slog.DiscardHandler), events: &event.Fanout{Sinks: []event.Sink{audit, telemetry.NewSpans(tp)}}}
	client := netip.MustParseAddr("10.0.1.5")
	dst := netip.MustParseAddr("192.0.2.10")
	ctx := context.Background()
	a.reportL7(ctx, l7.Event{Mode: l7.ModeConnect, Client: client, Host: "evil.test", Port: 443, Response: "403",
		Verdict: l7.Verdict{Reason: l7.ReasonOtherName, Policy: "FirewallPolicy/apps/web", Rule: "egress[0]", Tier: "Namespaced"}})
	a.reportL7(ctx, l7.Event{Mode: l7.ModeTransparentTLS, Client: client, Host: "good.test", Port: 443, Dst: dst,
		Verdict: l7.Verdict{Allowed: true, Audit: &l7.Verdict{Reason: l7.ReasonNameDenied, Policy: "FirewallPolicy/apps/staged", Rule: "egress[0]", Tier: "Namespaced"}}})
	a.reportL7(ctx, l7.Event{Mode: l7.ModeHTTP, Client: client, Host: "ok.test", Port: 80, Verdict: l7.Verdict{Allowed: true}})
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&buf)
	var lines []map[string]any
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines: %v", len(lines), lines)
	}
	want := []map[string]string{
		{"event": event.HTTPBlocked, "qname": "evil.test", "reason": l7.ReasonOtherName, "policy": "FirewallPolicy/apps/web", "response": "403", "client": "10.0.1.5"},
		{"event": event.HTTPAudit, "qname": "good.test", "reason": l7.ReasonNameDenied, "policy": "FirewallPolicy/apps/staged", "rule": "egress[0]", "tier": "Namespaced"},
	}
	for i, w := range want {
		for k, v := range w {
			if got, _ := lines[i][k].(string); got != v {
				t.Errorf("line %d: %s = %q, want %q (%v)", i, k, got, v, lines[i])
			}
		}
	}
	spans := exp.GetSpans()
	if len(spans) != 2 || spans[0].Name != event.HTTPBlocked || spans[1].Name != event.HTTPAudit {
		t.Fatalf("spans: %v", spans)
	}
	got := map[string]string{}
	for _, kv := range spans[1].Attributes {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	if got[telemetry.AttrPolicy] != "FirewallPolicy/apps/staged" || got[telemetry.AttrReason] != l7.ReasonNameDenied || got["egressd.l7.mode"] != "transparent-tls" {
		t.Errorf("audit span attributes: %v", got)
	}
	attrs, _ := lines[1]["attrs"].(map[string]any)
	if attrs["egressd.l7.mode"] != "transparent-tls" || attrs["destination.address"] != "192.0.2.10" || !strings.HasPrefix(attrs["server.port"].(string), "443") {
		t.Errorf("audit attrs: %v", attrs)
	}
}
