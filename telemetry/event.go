// Package telemetry is the one place for egressd's OpenTelemetry tracer provider, its
// audit log and its Prometheus registry. Other packages report through it:
//
//   - Reporter.Report(ctx, Event) writes one audit line, records one span named after the
//     event with the same fields as attributes, and counts the event;
//   - Metrics holds every Prometheus metric of the project (declared in metrics.go) in a
//     registry of its own, with plain-Go methods (no Prometheus types) for the hot paths
//     and Handler() for /metrics;
//   - NewTracerProvider builds the OTLP (gRPC or HTTP) tracer provider;
//   - AuditLog is the bounded, non-blocking JSON-lines writer.
//
// Packages that must not import telemetry (see DESIGN §2) declare a small interface in
// their own terms; *Reporter and *Metrics are written to satisfy such interfaces
// directly or through a one-line adapter in cmd/egressd.
package telemetry

import (
	"encoding/json"
	"math"
	"time"
)

// Event names (DESIGN §4). The span of an event is named after it.
const (
	// EventLookupBlocked: a lookup denied by policy (answered NXDOMAIN/REFUSED/sinkhole).
	EventLookupBlocked = "dns.lookup.blocked"
	// EventLookupAudit: a lookup an Audit-mode policy would have blocked (answered normally).
	EventLookupAudit = "dns.lookup.audit"
	// EventLookupAllowed: an allowed lookup; only a sampled span (Config.SampleAllowed), and
	// an audit line only when ReporterOptions.AuditAllowed is set.
	EventLookupAllowed = "dns.lookup.allowed"
	// EventTunnelSuspected: tunnel detection scored a (workload, domain) over the threshold.
	EventTunnelSuspected = "dns.tunnel.suspected"
	// EventTunnelBlocked: a lookup blocked because of tunnel detection.
	EventTunnelBlocked = "dns.tunnel.blocked"
	// EventHTTPBlocked: the L7 proxy refused an HTTP request / CONNECT / TLS SNI.
	EventHTTPBlocked = "http.egress.blocked"
	// EventHTTPAudit: an L7 request an Audit-mode policy would have refused (it proceeded).
	EventHTTPAudit = "http.egress.audit"
	// EventPacketDenied: a packet dropped by the kernel dataplane (nflog).
	EventPacketDenied = "packet.denied"
	// EventPolicyReloadFailed: a policy or workloads file was not taken (empty,
	// cut mid-document, invalid, unreadable); its last good content stays in
	// force. Once per distinct problem; reason is the problem kind, attrs carry
	// file.path, error.message and egressd.kept.
	EventPolicyReloadFailed = "policy.reload.failed"
	// EventPolicyReloadRecovered: the files load without a problem again.
	EventPolicyReloadRecovered = "policy.reload.recovered"
	// EventAnswerCapped: addresses of an answer dropped by a bound on what answers put
	// into the kernel sets (reason names it; attrs egressd.dropped counts them).
	EventAnswerCapped = "dns.answer.capped"
	// EventRebindingBlocked: answer addresses in a rebinding range (loopback,
	// link-local, the node's, the cluster's) dropped from an answer; attrs
	// "egressd.rebinding.dropped" lists them.
	EventRebindingBlocked = "dns.rebinding.blocked"
	// EventDNSBypassBlocked: a pod's DNS that bypassed egressd (plain DNS to
	// another resolver under Drop, DoT, DoQ, DoH to a known resolver) dropped
	// by the kernel (nflog).
	EventDNSBypassBlocked = "dns.bypass.blocked"
)

// Events lists every known event name, in a stable order.
var Events = []string{
	EventLookupBlocked, EventLookupAudit, EventLookupAllowed,
	EventTunnelSuspected, EventTunnelBlocked, EventHTTPBlocked, EventHTTPAudit, EventPacketDenied,
	EventPolicyReloadFailed, EventPolicyReloadRecovered,
	EventAnswerCapped, EventRebindingBlocked,
	EventDNSBypassBlocked,
}

// IsTunnel reports whether name is a tunnel-detection event (those carry Domain, Score
// and Features).
func IsTunnel(name string) bool {
	return name == EventTunnelSuspected || name == EventTunnelBlocked
}

// TimeFormat is the audit-log time format: RFC 3339 in UTC with a fixed nanosecond
// fraction (always has sub-seconds, sorts lexically).
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Event is one audit/trace event. Its JSON form is one audit-log line; Reporter records
// a span with the same fields as attributes (see the README for the mapping).
//
// Empty fields are left out of the JSON line, except time, event and workload (the empty
// workload means "unknown"). score is written for tunnel events even when 0.
type Event struct {
	Time      time.Time // zero: Reporter sets time.Now()
	Event     string    // one of the Event* constants
	Workload  string    // "namespace/name"; empty when unknown
	Namespace string
	Client    string // client IP
	QName     string // question name as asked
	QType     string // "A", "AAAA", ...
	Policy    string // deciding policy ("namespace/name" or cluster policy name)
	Rule      string // rule within the policy (e.g. "egress[1]")
	Tier      string // "Admin", "Namespaced", "Baseline", "Default"
	Reason    string // short machine-readable reason, e.g. "deny-rule", "not-allowed"
	Response  string // DNS response code sent, e.g. "NXDOMAIN", "REFUSED"; HTTP: "403"
	// CNAME is the name of the answer's alias chain (CNAME/DNAME) that decided a
	// blocked or audited lookup or request; empty when the question name decided.
	CNAME string

	// Tunnel events.
	Domain   string             // registered domain
	Score    float64            // detection score
	Features map[string]float64 // feature name → value

	// Attrs are extra attributes (e.g. "server.address", "server.port", "network.transport"
	// for packet.denied and http.egress.blocked). In JSON under "attrs"; as span attributes
	// under their own keys.
	Attrs map[string]string
}

// wireEvent is the JSON shape of Event.
type wireEvent struct {
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

// finite maps NaN and ±Inf (not representable in JSON) to 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// MarshalJSON encodes the event as one audit-log object.
func (e Event) MarshalJSON() ([]byte, error) {
	w := wireEvent{
		Time:      e.Time.UTC().Format(TimeFormat),
		Event:     e.Event,
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
	if e.Score != 0 || IsTunnel(e.Event) {
		s := finite(e.Score)
		w.Score = &s
	}
	if len(e.Features) > 0 {
		w.Features = make(map[string]float64, len(e.Features))
		for k, v := range e.Features {
			w.Features[k] = finite(v)
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes an audit-log line (for tools that read the log back).
func (e *Event) UnmarshalJSON(b []byte) error {
	var w wireEvent
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
		Time: t, Event: w.Event, Workload: w.Workload, Namespace: w.Namespace,
		Client: w.Client, QName: w.QName, QType: w.QType, Policy: w.Policy, Rule: w.Rule,
		Tier: w.Tier, Reason: w.Reason, Response: w.Response, CNAME: w.CNAME, Domain: w.Domain,
		Features: w.Features, Attrs: w.Attrs,
	}
	if w.Score != nil {
		e.Score = *w.Score
	}
	return nil
}
