package telemetry

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/egressd/egressd/telemetry/event"
)

// Span attribute keys. The span of an event carries the same fields as its audit line.
const (
	AttrEvent     = "egressd.event"
	AttrWorkload  = "egressd.workload"
	AttrNamespace = "k8s.namespace.name"
	AttrClient    = "client.address"
	AttrQName     = "dns.question.name"
	AttrQType     = "dns.question.type"
	AttrPolicy    = "egressd.policy"
	AttrRule      = "egressd.rule"
	AttrTier      = "egressd.tier"
	AttrReason    = "egressd.reason"
	AttrResponse  = "dns.response.code"
	AttrCNAME     = "egressd.dns.cname"
	AttrDomain    = "egressd.tunnel.domain"
	AttrScore     = "egressd.tunnel.score"
	// AttrFeaturePrefix + feature name, e.g. "egressd.tunnel.feature.entropy".
	AttrFeaturePrefix = "egressd.tunnel.feature."
)

// Spans is the OpenTelemetry event sink: one span per event, named after it,
// with the event's fields as attributes (allowed lookups sampled by
// Config.SampleAllowed of the provider). It never blocks on I/O: spans beyond
// the exporter's batch queue are dropped. A nil *Spans is a valid no-op.
type Spans struct {
	tracer trace.Tracer
}

// NewSpans returns the span sink over tp (nil: a no-op provider).
func NewSpans(tp trace.TracerProvider) *Spans {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return &Spans{tracer: tp.Tracer("github.com/egressd/egressd/telemetry")}
}

// Emit records one span for ev. The span is a child of the span in ctx, if
// any, and starts and ends at ev.Time.
func (s *Spans) Emit(ctx context.Context, ev event.Event) {
	if s == nil {
		return
	}
	_, span := s.tracer.Start(ctx, ev.Name,
		trace.WithTimestamp(ev.Time), trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		attrs := attrPool.Get().(*[]attribute.KeyValue)
		*attrs = appendAttributes((*attrs)[:0], &ev)
		span.SetAttributes(*attrs...)
		clear(*attrs)
		attrPool.Put(attrs)
	}
	span.End(trace.WithTimestamp(ev.Time))
}

var attrPool = sync.Pool{New: func() any {
	s := make([]attribute.KeyValue, 0, 24)
	return &s
}}

// Attributes returns the span attributes of an event: the same fields as its audit line
// (empty strings are left out, like in the line; workload is always present).
func Attributes(ev event.Event) []attribute.KeyValue {
	return appendAttributes(nil, &ev)
}

func appendAttributes(a []attribute.KeyValue, ev *event.Event) []attribute.KeyValue {
	a = append(a, attribute.String(AttrEvent, ev.Name), attribute.String(AttrWorkload, ev.Workload))
	str := func(k, v string) {
		if v != "" {
			a = append(a, attribute.String(k, v))
		}
	}
	str(AttrNamespace, ev.Namespace)
	str(AttrClient, ev.Client)
	str(AttrQName, ev.QName)
	str(AttrQType, ev.QType)
	str(AttrPolicy, ev.Policy)
	str(AttrRule, ev.Rule)
	str(AttrTier, ev.Tier)
	str(AttrReason, ev.Reason)
	str(AttrResponse, ev.Response)
	str(AttrCNAME, ev.CNAME)
	str(AttrDomain, ev.Domain)
	if ev.Score != 0 || event.IsTunnel(ev.Name) {
		a = append(a, attribute.Float64(AttrScore, event.Finite(ev.Score)))
	}
	for k, v := range ev.Features {
		a = append(a, attribute.Float64(AttrFeaturePrefix+k, event.Finite(v)))
	}
	for k, v := range ev.Attrs {
		a = append(a, attribute.String(k, v))
	}
	return a
}

var (
	_ event.Sink = (*Spans)(nil)
	_ event.Sink = (*AuditLog)(nil)
	_ event.Sink = (*Metrics)(nil)
)
