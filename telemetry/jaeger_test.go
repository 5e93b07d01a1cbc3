package telemetry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry"
	"github.com/egressd/egressd/telemetry/event"
	"github.com/egressd/egressd/test/jaeger"
)

// TestJaegerIntegration reports dns.lookup.blocked events through OTLP gRPC and OTLP
// HTTP to a real Jaeger v2 and reads them back from its query API.
func TestJaegerIntegration(t *testing.T) {
	srv := jaeger.Start(t)

	for _, tc := range []struct {
		protocol, endpoint string
		insecure           bool
	}{
		{"grpc", srv.OTLPGRPC, true},
		{"http", srv.OTLPHTTP, false}, // an http:// URL is plain text by itself
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			ctx := context.Background()
			tp, err := telemetry.NewTracerProvider(ctx, telemetry.Config{
				Endpoint: tc.endpoint, Protocol: tc.protocol, Insecure: tc.insecure,
				NodeName: "node-1", HostName: "host-1", BatchTimeout: 100 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			audit, err := telemetry.NewAuditLog(telemetry.AuditOptions{Path: filepath.Join(t.TempDir(), "audit.log")})
			if err != nil {
				t.Fatal(err)
			}
			defer audit.Close()
			m := telemetry.NewMetrics()
			rep := &event.Fanout{Sinks: []event.Sink{audit, telemetry.NewSpans(tp), m}}

			qname := fmt.Sprintf("xmr-%s.minepool.com.", tc.protocol)
			rep.Emit(ctx, event.Event{
				Name:      event.LookupBlocked,
				Workload:  "payments/gateway-0",
				Namespace: "payments",
				Client:    "10.0.1.5",
				QName:     qname,
				QType:     "A",
				Policy:    "deny-mining",
				Rule:      "egress[0]",
				Tier:      "Admin",
				Reason:    "deny-rule",
				Response:  "NXDOMAIN",
			})
			// An allowed lookup with SampleAllowed=0 must not reach Jaeger.
			rep.Emit(ctx, event.Event{Name: event.LookupAllowed, QName: "ok." + qname})
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil { // flushes the batch
				t.Fatalf("Shutdown: %v", err)
			}

			span := srv.WaitForSpan(t, "egressd", event.LookupBlocked, 30*time.Second, func(s jaeger.Span) bool {
				return s.TagString(telemetry.AttrQName) == qname
			})
			for key, want := range map[string]string{
				telemetry.AttrWorkload:  "payments/gateway-0",
				telemetry.AttrNamespace: "payments",
				telemetry.AttrClient:    "10.0.1.5",
				telemetry.AttrQName:     qname,
				telemetry.AttrQType:     "A",
				telemetry.AttrPolicy:    "deny-mining",
				telemetry.AttrRule:      "egress[0]",
				telemetry.AttrTier:      "Admin",
				telemetry.AttrReason:    "deny-rule",
				telemetry.AttrResponse:  "NXDOMAIN",
			} {
				if got := span.TagString(key); got != want {
					t.Errorf("span tag %s = %q, want %q", key, got, want)
				}
			}
			if span.OperationName != "dns.lookup.blocked" {
				t.Errorf("operation %q", span.OperationName)
			}
			for key, want := range map[string]string{"host.name": "host-1", "k8s.node.name": "node-1"} {
				if got, _ := span.Process.Tag(key); got != want {
					t.Errorf("resource %s = %v, want %q", key, got, want)
				}
			}
			spans, err := srv.Spans(ctx, "egressd", event.LookupAllowed)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range spans {
				if s.TagString(telemetry.AttrQName) == "ok."+qname {
					t.Errorf("unsampled allowed lookup exported: %+v", s)
				}
			}
		})
	}
}
