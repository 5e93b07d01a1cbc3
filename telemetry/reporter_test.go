package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/egressd/egressd/telemetry/event"
)

// sinks joins the audit log, the spans and the metrics the way the agent does.
func sinks(a *AuditLog, tp *sdktrace.TracerProvider, m *Metrics) *event.Fanout {
	return &event.Fanout{Sinks: []event.Sink{a, NewSpans(tp), m}}
}

func newTestReporter(t *testing.T, sampleAllowed float64, auditAllowed bool) (*event.Fanout, *tracetest.InMemoryExporter, *AuditLog, string) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(NewSampler(sampleAllowed)))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := NewAuditLog(AuditOptions{Path: path, Allowed: auditAllowed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return sinks(a, tp, NewMetrics()), exp, a, path
}

// The span of an event carries the same fields as its audit line.
func TestReportSpanMatchesAuditLine(t *testing.T) {
	r, exp, a, path := newTestReporter(t, 0, false)
	ev := blockedEvent(7)
	ev.Attrs = map[string]string{"server.port": "53"}
	ev.CNAME = "pool.minepool.example"
	r.Emit(context.Background(), ev)
	tun := event.Event{Name: event.TunnelBlocked, Workload: "a/b", Client: "10.0.0.9", QName: "x.t.example.com",
		Domain: "example.com", Score: 0.8, Features: map[string]float64{"entropy": 4.5}}
	r.Emit(context.Background(), tun)
	a.Flush()

	lines := readLines(t, path)
	spans := exp.GetSpans()
	if len(lines) != 2 || len(spans) != 2 {
		t.Fatalf("%d lines, %d spans", len(lines), len(spans))
	}
	// line field → span attribute key
	keyOf := map[string]string{
		"event": AttrEvent, "workload": AttrWorkload, "namespace": AttrNamespace, "client": AttrClient,
		"qname": AttrQName, "qtype": AttrQType, "policy": AttrPolicy, "rule": AttrRule, "tier": AttrTier,
		"reason": AttrReason, "response": AttrResponse, "domain": AttrDomain, "score": AttrScore,
		"cname": AttrCNAME,
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		s := spans[i]
		if s.Name != m["event"] {
			t.Errorf("span name %q, line event %v", s.Name, m["event"])
		}
		attrs := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes {
			attrs[kv.Key] = kv.Value
		}
		n := 0
		for field, v := range m {
			switch field {
			case "time":
				if got := s.StartTime.UTC().Format(event.TimeFormat); got != v {
					t.Errorf("span start %s, line time %v", got, v)
				}
			case "features":
				for fk, fv := range v.(map[string]any) {
					n++
					if got := attrs[attribute.Key(AttrFeaturePrefix+fk)]; got.AsFloat64() != fv {
						t.Errorf("feature %s: span %v, line %v", fk, got.Emit(), fv)
					}
				}
			case "attrs":
				for ak, av := range v.(map[string]any) {
					n++
					if got := attrs[attribute.Key(ak)]; got.AsString() != av {
						t.Errorf("attr %s: span %v, line %v", ak, got.Emit(), av)
					}
				}
			default:
				n++
				key, ok := keyOf[field]
				if !ok {
					t.Fatalf("line field %q has no attribute mapping", field)
				}
				got, ok := attrs[attribute.Key(key)]
				if !ok {
					t.Errorf("span lacks %s (line %s=%v)", key, field, v)
				} else if fmt.Sprint(got.AsInterface()) != fmt.Sprint(v) {
					t.Errorf("%s: span %v, line %v", key, got.AsInterface(), v)
				}
			}
		}
		if n != len(attrs) {
			t.Errorf("span has %d attributes, line %d fields: %v", len(attrs), n, s.Attributes)
		}
	}
}

func TestReportAllowedIsSampledAndNotAudited(t *testing.T) {
	r, exp, a, path := newTestReporter(t, 0, false)
	for range 100 {
		r.Emit(context.Background(), event.Event{Name: event.LookupAllowed, QName: "ok.example.com"})
	}
	r.Emit(context.Background(), event.Event{Name: event.LookupAudit, QName: "would.example.com"})
	a.Flush()
	if n := len(readLines(t, path)); n != 1 {
		t.Errorf("%d audit lines, want 1 (the audit event only)", n)
	}
	if n := len(exp.GetSpans()); n != 1 {
		t.Errorf("%d spans with SampleAllowed=0, want 1", n)
	}

	r, exp, a, path = newTestReporter(t, 1, true)
	for range 10 {
		r.Emit(context.Background(), event.Event{Name: event.LookupAllowed, QName: "ok.example.com"})
	}
	a.Flush()
	if n := len(readLines(t, path)); n != 10 {
		t.Errorf("%d audit lines with AuditAllowed, want 10", n)
	}
	if n := len(exp.GetSpans()); n != 10 {
		t.Errorf("%d spans with SampleAllowed=1, want 10", n)
	}

	r, exp, _, _ = newTestReporter(t, 0.5, false)
	for range 2000 {
		r.Emit(context.Background(), event.Event{Name: event.LookupAllowed})
	}
	if n := len(exp.GetSpans()); n < 800 || n > 1200 {
		t.Errorf("%d of 2000 sampled at 0.5", n)
	}
}

func TestReportConcurrent(t *testing.T) {
	r, exp, a, path := newTestReporter(t, 0.1, false)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				r.Emit(context.Background(), blockedEvent(w*1000+i))
				r.Emit(context.Background(), event.Event{Name: event.LookupAllowed})
			}
		}()
	}
	wg.Wait()
	a.Flush()
	if n := len(readLines(t, path)); n != 1600 {
		t.Errorf("%d lines", n)
	}
	if n := len(exp.GetSpans()); n < 1600 {
		t.Errorf("%d spans", n)
	}
}

func BenchmarkReportBlocked(b *testing.B) {
	exp := tracetest.NewNoopExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(NewSampler(0)))
	defer tp.Shutdown(context.Background())
	a, _ := NewAuditLog(AuditOptions{Path: filepath.Join(b.TempDir(), "a.log"), QueueSize: 1 << 20})
	defer a.Close()
	r := sinks(a, tp, NewMetrics())
	ev := blockedEvent(1)
	b.ReportAllocs()
	for b.Loop() {
		r.Emit(context.Background(), ev)
	}
}

func BenchmarkReportAllowedUnsampled(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(NewSampler(0)))
	r := &event.Fanout{Sinks: []event.Sink{NewSpans(tp), NewMetrics()}}
	ev := event.Event{Name: event.LookupAllowed, QName: "ok.example.com", Workload: "a/b"}
	b.ReportAllocs()
	for b.Loop() {
		r.Emit(context.Background(), ev)
	}
}

func TestReportFillsTimeAndNamespace(t *testing.T) {
	r, exp, a, path := newTestReporter(t, 0, false)
	r.Emit(context.Background(), event.Event{Name: event.PacketDenied, Workload: "shop/web-1", Client: "10.0.2.3"})
	a.Flush()
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("%d lines", len(lines))
	}
	var ev event.Event
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Namespace != "shop" || ev.Time.IsZero() {
		t.Errorf("namespace %q time %v", ev.Namespace, ev.Time)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != event.PacketDenied {
		t.Fatalf("spans %v", spans)
	}
	found := false
	for _, kv := range spans[0].Attributes {
		if kv.Key == AttrNamespace && kv.Value.AsString() == "shop" {
			found = true
		}
	}
	if !found {
		t.Errorf("span lacks %s=shop: %v", AttrNamespace, spans[0].Attributes)
	}
}
