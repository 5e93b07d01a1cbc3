package telemetry

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// EventReporter is what packages that emit events need. *Reporter, *Recorder and
// ReporterFunc implement it; a package that may not import telemetry declares the same
// method set in its own terms and cmd/egressd adapts.
type EventReporter interface {
	Report(ctx context.Context, ev Event)
}

// ReporterFunc adapts a function to EventReporter.
type ReporterFunc func(ctx context.Context, ev Event)

// Report calls f.
func (f ReporterFunc) Report(ctx context.Context, ev Event) { f(ctx, ev) }

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

// ReporterOptions wires a Reporter. Every field is optional: a nil part is skipped.
type ReporterOptions struct {
	// Audit receives one line per event (not for dns.lookup.allowed unless AuditAllowed).
	Audit *AuditLog
	// TracerProvider records one span per event; use NewTracerProvider's result.
	TracerProvider trace.TracerProvider
	// Metrics counts events (egressd_events_total and the per-kind counters).
	Metrics *Metrics
	// AuditAllowed writes dns.lookup.allowed events to the audit log too (verbose).
	AuditAllowed bool
	// Now is the clock for events without Time (default time.Now).
	Now func() time.Time
}

// Reporter is the single entry point through which the other packages report events.
// It is safe for concurrent use, and a nil *Reporter is a valid no-op.
type Reporter struct {
	audit        *AuditLog
	tracer       trace.Tracer
	metrics      *Metrics
	auditAllowed bool
	now          func() time.Time
}

// NewReporter returns a Reporter over the given parts.
func NewReporter(o ReporterOptions) *Reporter {
	tp := o.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Reporter{
		audit:        o.Audit,
		tracer:       tp.Tracer("github.com/egressd/egressd/telemetry"),
		metrics:      o.Metrics,
		auditAllowed: o.AuditAllowed,
		now:          now,
	}
}

// Report records one event: an audit line (allowed lookups only with AuditAllowed), a
// span named ev.Event with the event's fields as attributes (allowed lookups sampled by
// Config.SampleAllowed) and the counters in Metrics. It never blocks on I/O: audit lines
// beyond the queue and spans beyond the batch queue are dropped and counted.
//
// The span is a child of the span in ctx, if any, and starts and ends at ev.Time. An
// empty Time is set to now; an empty Namespace is taken from Workload ("namespace/name").
func (r *Reporter) Report(ctx context.Context, ev Event) {
	if r == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = r.now()
	}
	if ev.Namespace == "" {
		if ns, _, ok := strings.Cut(ev.Workload, "/"); ok {
			ev.Namespace = ns
		}
	}
	r.metrics.countEvent(&ev)
	if r.audit != nil && (ev.Event != EventLookupAllowed || r.auditAllowed) {
		_ = r.audit.Write(ev) // a drop is counted by the log
	}
	_, span := r.tracer.Start(ctx, ev.Event,
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
func Attributes(ev Event) []attribute.KeyValue {
	return appendAttributes(nil, &ev)
}

func appendAttributes(a []attribute.KeyValue, ev *Event) []attribute.KeyValue {
	a = append(a, attribute.String(AttrEvent, ev.Event), attribute.String(AttrWorkload, ev.Workload))
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
	if ev.Score != 0 || IsTunnel(ev.Event) {
		a = append(a, attribute.Float64(AttrScore, finite(ev.Score)))
	}
	for k, v := range ev.Features {
		a = append(a, attribute.Float64(AttrFeaturePrefix+k, finite(v)))
	}
	for k, v := range ev.Attrs {
		a = append(a, attribute.String(k, v))
	}
	return a
}

// Recorder is an in-memory EventReporter for tests of other packages.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Report stores ev.
func (r *Recorder) Report(_ context.Context, ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

// Events returns a copy of the events reported so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Reset forgets the recorded events.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

var (
	_ EventReporter = (*Reporter)(nil)
	_ EventReporter = (*Recorder)(nil)
	_ EventReporter = ReporterFunc(nil)
)
