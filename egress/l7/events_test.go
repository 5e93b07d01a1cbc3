package l7

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/egressd/egressd/telemetry"
	"github.com/egressd/egressd/telemetry/event"
)

// TestDecisionEvents: a blocked request becomes an http.egress.blocked line and
// span, an allowed one that Audit-mode policies would block an
// http.egress.audit line and span with the audit verdict; a plain allowed
// request nothing.
func TestDecisionEvents(t *testing.T) {
	var buf bytes.Buffer
	audit, err := telemetry.NewAuditLog(telemetry.AuditOptions{Stdout: &buf})
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	h := &Hooks{Events: &event.Fanout{Sinks: []event.Sink{audit, telemetry.NewSpans(tp)}}}
	client := netip.MustParseAddr("10.0.1.5")
	dst := netip.MustParseAddr("192.0.2.10")
	ctx := context.Background()
	h.decided(ctx, decision{Mode: ModeConnect, Client: client, Host: "evil.test", Port: 443, Response: "403",
		Verdict: Verdict{Reason: ReasonOtherName, Policy: "FirewallPolicy/apps/web", Rule: "egress[0]", Tier: "Namespaced"}})
	h.decided(ctx, decision{Mode: ModeTransparentTLS, Client: client, Host: "good.test", Port: 443, Dst: dst,
		Verdict: Verdict{Allowed: true, Audit: &Verdict{Reason: ReasonNameDenied, Policy: "FirewallPolicy/apps/staged", Rule: "egress[0]", Tier: "Namespaced"}}})
	h.decided(ctx, decision{Mode: ModeHTTP, Client: client, Host: "ok.test", Port: 80, Verdict: Verdict{Allowed: true}})
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
		{"event": event.HTTPBlocked, "qname": "evil.test", "reason": ReasonOtherName, "policy": "FirewallPolicy/apps/web", "response": "403", "client": "10.0.1.5"},
		{"event": event.HTTPAudit, "qname": "good.test", "reason": ReasonNameDenied, "policy": "FirewallPolicy/apps/staged", "rule": "egress[0]", "tier": "Namespaced"},
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
	if got[telemetry.AttrPolicy] != "FirewallPolicy/apps/staged" || got[telemetry.AttrReason] != ReasonNameDenied || got[AttrMode] != "transparent-tls" {
		t.Errorf("audit span attributes: %v", got)
	}
	attrs, _ := lines[1]["attrs"].(map[string]any)
	if attrs[AttrMode] != "transparent-tls" || attrs[AttrDestination] != "192.0.2.10" || !strings.HasPrefix(attrs["server.port"].(string), "443") {
		t.Errorf("audit attrs: %v", attrs)
	}
}
