// Package event is egressd's one event vocabulary: the Event every emitter
// reports (the resolver, tunnel detection, the L7 proxy, the nflog reader, the
// policy file source) and the Sink they report it to. The audit log, the
// OpenTelemetry spans, the Prometheus counters and the /status ring of blocked
// lookups are Sinks (telemetry and telemetry/statusapi); the agent joins them
// with a Fanout. The package depends on the standard library only, so any
// package may emit events without importing telemetry.
//
// An Event's JSON form is one audit-log line (docs/design.md §4, docs/egressd.md
// "Audit log"); its span carries the same fields as attributes.
package event

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"time"
)

// Event names (docs/design.md §4). The span of an event is named after it.
const (
	// LookupBlocked: a lookup denied by policy (answered NXDOMAIN/REFUSED/sinkhole).
	LookupBlocked = "dns.lookup.blocked"
	// LookupAudit: a lookup an Audit-mode policy would have blocked (answered normally).
	LookupAudit = "dns.lookup.audit"
	// LookupAllowed: an allowed lookup; only a sampled span, and an audit line
	// only when the audit log is told to write them.
	LookupAllowed = "dns.lookup.allowed"
	// TunnelSuspected: tunnel detection scored a (workload, domain) over the threshold.
	TunnelSuspected = "dns.tunnel.suspected"
	// TunnelBlocked: a lookup blocked because of tunnel detection.
	TunnelBlocked = "dns.tunnel.blocked"
	// HTTPBlocked: the L7 proxy refused an HTTP request / CONNECT / TLS SNI.
	HTTPBlocked = "http.egress.blocked"
	// HTTPAudit: an L7 request an Audit-mode policy would have refused (it proceeded).
	HTTPAudit = "http.egress.audit"
	// PacketDenied: a packet dropped by the kernel dataplane (nflog).
	PacketDenied = "packet.denied"
	// PolicyReloadFailed: a policy or workloads file was not taken (empty,
	// cut mid-document, invalid, unreadable); its last good content stays in
	// force. Once per distinct problem; reason is the problem kind, attrs carry
	// file.path, error.message and egressd.kept.
	PolicyReloadFailed = "policy.reload.failed"
	// PolicyReloadRecovered: the files load without a problem again.
	PolicyReloadRecovered = "policy.reload.recovered"
	// AnswerCapped: addresses of an answer dropped by a bound on what answers put
	// into the kernel sets (reason names it; attrs egressd.dropped counts them).
	AnswerCapped = "dns.answer.capped"
	// RebindingBlocked: answer addresses in a rebinding range (loopback,
	// link-local, the node's, the cluster's) dropped from an answer; attrs
	// "egressd.rebinding.dropped" lists them.
	RebindingBlocked = "dns.rebinding.blocked"
	// DNSBypassBlocked: a pod's DNS that bypassed egressd (plain DNS to
	// another resolver under Drop, DoT, DoQ, DoH to a known resolver) dropped
	// by the kernel (nflog).
	DNSBypassBlocked = "dns.bypass.blocked"
)

// Names lists every event name, in a stable order.
var Names = []string{
	LookupBlocked, LookupAudit, LookupAllowed,
	TunnelSuspected, TunnelBlocked, HTTPBlocked, HTTPAudit, PacketDenied,
	PolicyReloadFailed, PolicyReloadRecovered,
	AnswerCapped, RebindingBlocked,
	DNSBypassBlocked,
}

// IsTunnel reports whether name is a tunnel-detection event (those carry Domain,
// Score and Features).
func IsTunnel(name string) bool {
	return name == TunnelSuspected || name == TunnelBlocked
}

// TimeFormat is the audit-log time format: RFC 3339 in UTC with a fixed
// nanosecond fraction (always has sub-seconds, sorts lexically).
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Event is one audit/trace event. Its JSON form is one audit-log line; the span
// of the event carries the same fields as attributes (telemetry's README has the
// mapping).
//
// Empty fields are left out of the JSON line, except time, event and workload
// (the empty workload means "unknown"). score is written for tunnel events even
// when 0. ClientPort and TCP are not written: they only let a sink find where a
// redirected query was first sent.
type Event struct {
	Time      time.Time // zero: the Fanout sets the time it was emitted
	Name      string    // one of the names above; "event" in JSON
	Workload  string    // "namespace/name"; empty when unknown
	Namespace string    // empty: the Fanout takes it from Workload
	Client    string    // client IP
	QName     string    // question name as asked (L7: the host name)
	QType     string    // "A", "AAAA", ...
	Policy    string    // deciding policy ("Kind/name" or "Kind/namespace/name")
	Rule      string    // rule within the policy (its name or e.g. "egress[1]")
	Tier      string    // "Admin", "Namespaced", "Baseline", "Default"
	Reason    string    // short machine-readable reason, e.g. "deny-rule", "not-allowed"
	Response  string    // DNS response code sent, e.g. "NXDOMAIN", "REFUSED"; HTTP: "403"
	// CNAME is the name of the answer's alias chain (CNAME/DNAME) that decided a
	// blocked or audited lookup or request; empty when the question name decided.
	CNAME string

	// Tunnel events.
	Domain   string             // registered domain
	Score    float64            // detection score
	Features map[string]float64 // feature name → value

	// Attrs are extra attributes (e.g. "server.address", "server.port",
	// "network.transport" for packet.denied and http.egress.blocked). In JSON
	// under "attrs"; as span attributes under their own keys.
	Attrs map[string]string

	// ClientPort and TCP are the client's port and transport of a lookup (not
	// in the audit line).
	ClientPort uint16
	TCP        bool
}

// Sink receives events. Emit is called on hot paths (the DNS query path, the
// proxy, the nflog reader): it must not block on I/O (buffer or drop instead)
// and must be safe for concurrent use. A sink must not modify the event's maps.
type Sink interface {
	Emit(ctx context.Context, ev Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, ev Event)

// Emit calls f.
func (f SinkFunc) Emit(ctx context.Context, ev Event) { f(ctx, ev) }

// Discard is a Sink that drops every event.
var Discard Sink = SinkFunc(func(context.Context, Event) {})

// Fanout is the Sink the agent hands to the emitters: it completes an event
// (Time, Namespace) once and passes it to every sink in order. Nil sinks are
// skipped.
type Fanout struct {
	Sinks []Sink
	// Now is the clock for events without Time (default time.Now).
	Now func() time.Time
}

// Emit completes ev and passes it to every sink.
func (f *Fanout) Emit(ctx context.Context, ev Event) {
	if f == nil {
		return
	}
	if ev.Time.IsZero() {
		if f.Now != nil {
			ev.Time = f.Now()
		} else {
			ev.Time = time.Now()
		}
	}
	if ev.Namespace == "" {
		if ns, _, ok := strings.Cut(ev.Workload, "/"); ok {
			ev.Namespace = ns
		}
	}
	for _, s := range f.Sinks {
		if s != nil {
			s.Emit(ctx, ev)
		}
	}
}

// Recorder is an in-memory Sink for tests.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Emit stores ev.
func (r *Recorder) Emit(_ context.Context, ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

// Events returns a copy of the events emitted so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Named returns the events with the given name, in order.
func (r *Recorder) Named(name string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, ev := range r.events {
		if ev.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

// Reset forgets the recorded events.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

// wire is the JSON shape of Event (one audit-log line).
type wire struct {
	Time      string             `json:"time"`
	Event     string             `json:"event"`
	Workload  string             `json:"workload"`
	Namespace string             `json:"namespace,omitempty"`
	Client    string             `json:"client,omitempty"`
	QName     string             `json:"qname,omitempty"`
	QType     string             `json:"qtype,omitempty"`
	Policy    string             `json:"policy,omitempty"`
	Rule      string             `json:"rule,omitempty"`
	Tier      string             `json:"tier,omitempty"`
	Reason    string             `json:"reason,omitempty"`
	Response  string             `json:"response,omitempty"`
	CNAME     string             `json:"cname,omitempty"`
	Domain    string             `json:"domain,omitempty"`
	Score     *float64           `json:"score,omitempty"`
	Features  map[string]float64 `json:"features,omitempty"`
	Attrs     map[string]string  `json:"attrs,omitempty"`
}

// Finite maps NaN and ±Inf (not representable in JSON) to 0.
func Finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// MarshalJSON encodes the event as one audit-log object.
func (e Event) MarshalJSON() ([]byte, error) {
	w := wire{
		Time:      e.Time.UTC().Format(TimeFormat),
		Event:     e.Name,
		Workload:  e.Workload,
		Namespace: e.Namespace,
		Client:    e.Client,
		QName:     e.QName,
		QType:     e.QType,
		Policy:    e.Policy,
		Rule:      e.Rule,
		Tier:      e.Tier,
		Reason:    e.Reason,
		Response:  e.Response,
		CNAME:     e.CNAME,
		Domain:    e.Domain,
		Attrs:     e.Attrs,
	}
	if e.Score != 0 || IsTunnel(e.Name) {
		s := Finite(e.Score)
		w.Score = &s
	}
	if len(e.Features) > 0 {
		w.Features = make(map[string]float64, len(e.Features))
		for k, v := range e.Features {
			w.Features[k] = Finite(v)
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes an audit-log line (for tools that read the log back).
func (e *Event) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var t time.Time
	if w.Time != "" {
		var err error
		if t, err = time.Parse(time.RFC3339Nano, w.Time); err != nil {
			return err
		}
	}
	*e = Event{
		Time: t, Name: w.Event, Workload: w.Workload, Namespace: w.Namespace,
		Client: w.Client, QName: w.QName, QType: w.QType, Policy: w.Policy, Rule: w.Rule,
		Tier: w.Tier, Reason: w.Reason, Response: w.Response, CNAME: w.CNAME, Domain: w.Domain,
		Features: w.Features, Attrs: w.Attrs,
	}
	if w.Score != nil {
		e.Score = *w.Score
	}
	return nil
}
