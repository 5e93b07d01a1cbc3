package telemetry

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/egressd/egressd/telemetry/event"
)

// This file declares every Prometheus metric of egressd. Each one is documented in
// telemetry/README.md; keep the two in step.

// Values of the result label of egressd_dns_queries_total.
const (
	ResultAllowed = "allowed" // answered from cache or upstream
	ResultBlocked = "blocked" // denied by policy (NXDOMAIN/REFUSED/sinkhole)
	ResultAudit   = "audit"   // an Audit-mode policy would have blocked it; answered
	ResultTunnel  = "tunnel"  // blocked by tunnel detection
	ResultError   = "error"   // upstream failure or timeout (SERVFAIL)
	ResultRefused = "refused" // malformed, oversize or rate-limited query (FORMERR/REFUSED/dropped)
)

// DNSResults lists the result label values, pre-initialised to 0.
var DNSResults = []string{ResultAllowed, ResultBlocked, ResultAudit, ResultTunnel, ResultError, ResultRefused}

// Metrics is the project's Prometheus registry and metrics. It does not use the global
// default registry. The methods take plain Go values so that packages can declare an
// interface in their own terms; all of them are safe on a nil *Metrics (no-ops).
type Metrics struct {
	Registry *prometheus.Registry

	DNSQueries           *prometheus.CounterVec // egressd_dns_queries_total{result}
	DNSCacheHits         prometheus.Counter     // egressd_dns_cache_hits_total
	DNSBlocked           *prometheus.CounterVec // egressd_dns_blocked_total{policy,reason}
	DNSUpstreamLatency   prometheus.Histogram   // egressd_dns_upstream_latency_seconds
	DNSSetWriteLatency   prometheus.Histogram   // egressd_dns_set_write_latency_seconds
	DNSSetWriteErrors    prometheus.Counter     // egressd_dns_set_write_errors_total
	Events               *prometheus.CounterVec // egressd_events_total{event}
	AuditDropped         prometheus.Counter     // egressd_audit_dropped_total
	DataplaneApply       prometheus.Histogram   // egressd_dataplane_apply_seconds
	DataplaneApplyErrors prometheus.Counter     // egressd_dataplane_apply_errors_total
	Policies             *prometheus.GaugeVec   // egressd_policies{kind,state}
	TunnelSuspected      prometheus.Counter     // egressd_tunnel_suspected_total
	HTTPBlocked          prometheus.Counter     // egressd_http_blocked_total
	TraceExportErrors    prometheus.Counter     // egressd_trace_export_errors_total
	PolicyReloadErrors   prometheus.Counter     // egressd_policy_reload_errors_total
	PolicyReloadOK       prometheus.Gauge       // egressd_policy_reload_ok
	DNSUpstreamUp        *prometheus.GaugeVec   // egressd_dns_upstream_up{upstream}
	DNSRebindingBlocked  *prometheus.CounterVec // egressd_dns_rebinding_blocked_total{range}

	events map[string]prometheus.Counter // pre-resolved egressd_events_total children
	other  prometheus.Counter            // egressd_events_total{event="other"}
}

// NewMetrics creates the registry with every egressd metric, plus the Go runtime and
// process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.DNSQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egressd_dns_queries_total",
		Help: "DNS queries handled by the node resolver, by result (allowed, blocked, audit, tunnel, error, refused).",
	}, []string{"result"})
	m.DNSCacheHits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_dns_cache_hits_total",
		Help: "DNS queries answered from the resolver cache.",
	})
	m.DNSBlocked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egressd_dns_blocked_total",
		Help: "DNS lookups blocked by policy, by deciding policy and reason.",
	}, []string{"policy", "reason"})
	m.DNSUpstreamLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "egressd_dns_upstream_latency_seconds",
		Help:    "Latency of queries forwarded to the upstream resolvers (cache misses), in seconds.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms .. ~4s
	})
	m.DNSSetWriteLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "egressd_dns_set_write_latency_seconds",
		Help:    "Time to write the IPs of an allowed answer into the kernel sets before replying, in seconds.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14), // 50µs .. ~0.4s
	})
	m.DNSSetWriteErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_dns_set_write_errors_total",
		Help: "Failed writes of answer IPs into the kernel sets.",
	})
	m.Events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egressd_events_total",
		Help: "Audit/trace events reported, by event name (dns.lookup.blocked, ...; other for unknown names).",
	}, []string{"event"})
	m.AuditDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_audit_dropped_total",
		Help: "Audit-log lines dropped because the writer could not keep up, was closed, or failed to write.",
	})
	m.DataplaneApply = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "egressd_dataplane_apply_seconds",
		Help:    "Duration of applying a policy plan to the kernel (one nftables transaction), in seconds.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1ms .. ~33s
	})
	m.DataplaneApplyErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_dataplane_apply_errors_total",
		Help: "Failed applies of a policy plan to the kernel.",
	})
	m.Policies = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "egressd_policies",
		Help: "Policies known to the agent, by kind (NetworkPolicy, FirewallPolicy, ClusterFirewallPolicy) and state (e.g. enforced, audit, invalid).",
	}, []string{"kind", "state"})
	m.TunnelSuspected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_tunnel_suspected_total",
		Help: "DNS tunnel detections (dns.tunnel.suspected and dns.tunnel.blocked events).",
	})
	m.HTTPBlocked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_http_blocked_total",
		Help: "HTTP requests, CONNECTs and TLS connections refused by the L7 egress proxy.",
	})
	m.TraceExportErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_trace_export_errors_total",
		Help: "Errors reported by the OpenTelemetry SDK (span export failures, dropped batches).",
	})
	m.PolicyReloadErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "egressd_policy_reload_errors_total",
		Help: "Loads of the policy and workload files that found a problem (a file empty, cut mid-document, invalid or unreadable; its last good content stays in force). Counted once per change of the files, not per poll.",
	})
	m.PolicyReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "egressd_policy_reload_ok",
		Help: "1 when the last load of the policy and workload files found no problem, 0 when a file was not taken (its last good content is in force).",
	})
	m.DNSUpstreamUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "egressd_dns_upstream_up",
		Help: "1 while an upstream resolver answers, 0 once it is marked down (consecutive failed exchanges or health probes), by upstream host:port.",
	}, []string{"upstream"})

	m.DNSRebindingBlocked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egressd_dns_rebinding_blocked_total",
		Help: "Answer addresses dropped by DNS rebinding protection, by range (unspecified, loopback, link-local, node, cluster).",
	}, []string{"range"})
	m.Registry.MustRegister(m.DNSRebindingBlocked)
	for _, r := range RebindRanges {
		m.DNSRebindingBlocked.WithLabelValues(r)
	}

	m.Registry.MustRegister(
		m.DNSQueries, m.DNSCacheHits, m.DNSBlocked, m.DNSUpstreamLatency,
		m.DNSSetWriteLatency, m.DNSSetWriteErrors, m.Events, m.AuditDropped,
		m.DataplaneApply, m.DataplaneApplyErrors, m.Policies, m.TunnelSuspected,
		m.HTTPBlocked, m.TraceExportErrors, m.PolicyReloadErrors, m.PolicyReloadOK,
		m.DNSUpstreamUp,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, r := range DNSResults {
		m.DNSQueries.WithLabelValues(r)
	}
	m.events = make(map[string]prometheus.Counter, len(event.Names))
	for _, e := range event.Names {
		m.events[e] = m.Events.WithLabelValues(e)
	}
	m.other = m.Events.WithLabelValues("other")
	return m
}

// Handler serves the registry in the Prometheus exposition formats (mount on /metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		Registry:          m.Registry, // promhttp_metric_handler_errors_total
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	})
}

// DNSQuery counts one handled query with its result (one of the Result* constants).
func (m *Metrics) DNSQuery(result string) {
	if m == nil {
		return
	}
	m.DNSQueries.WithLabelValues(result).Inc()
}

// DNSCacheHit counts one answer served from the cache.
func (m *Metrics) DNSCacheHit() {
	if m == nil {
		return
	}
	m.DNSCacheHits.Inc()
}

// ObserveUpstream records the latency of one forwarded query.
func (m *Metrics) ObserveUpstream(d time.Duration) {
	if m == nil {
		return
	}
	m.DNSUpstreamLatency.Observe(d.Seconds())
}

// ObserveSetWrite records one kernel-set write of an answer and whether it failed.
func (m *Metrics) ObserveSetWrite(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.DNSSetWriteLatency.Observe(d.Seconds())
	if err != nil {
		m.DNSSetWriteErrors.Inc()
	}
}

// ObserveDataplaneApply records one plan apply and whether it failed.
func (m *Metrics) ObserveDataplaneApply(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.DataplaneApply.Observe(d.Seconds())
	if err != nil {
		m.DataplaneApplyErrors.Inc()
	}
}

// SetPolicies sets the number of policies of a kind in a state.
func (m *Metrics) SetPolicies(kind, state string, n int) {
	if m == nil {
		return
	}
	m.Policies.WithLabelValues(kind, state).Set(float64(n))
}

// ResetPolicies clears egressd_policies (before setting a fresh census, so that
// kind/state pairs that no longer occur disappear).
func (m *Metrics) ResetPolicies() {
	if m == nil {
		return
	}
	m.Policies.Reset()
}

// ObservePolicyReload records one load of the policy and workload files and
// whether it found no problem.
func (m *Metrics) ObservePolicyReload(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.PolicyReloadOK.Set(1)
		return
	}
	m.PolicyReloadOK.Set(0)
	m.PolicyReloadErrors.Inc()
}

// SetUpstreamUp sets egressd_dns_upstream_up of an upstream.
func (m *Metrics) SetUpstreamUp(upstream string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.DNSUpstreamUp.WithLabelValues(upstream).Set(v)
}

// Emit counts one event (egressd_events_total and the per-kind counters): the
// metrics sink.
func (m *Metrics) Emit(_ context.Context, ev event.Event) {
	if m == nil {
		return
	}
	if c, ok := m.events[ev.Name]; ok {
		c.Inc()
	} else {
		m.other.Inc()
	}
	switch ev.Name {
	case event.LookupBlocked:
		m.DNSBlocked.WithLabelValues(ev.Policy, ev.Reason).Inc()
	case event.TunnelSuspected, event.TunnelBlocked:
		m.TunnelSuspected.Inc()
	case event.HTTPBlocked:
		m.HTTPBlocked.Inc()
	}
}

// RebindRanges are the range label values of egressd_dns_rebinding_blocked_total
// (dnsproxy.RebindRanges), pre-initialised to 0.
var RebindRanges = []string{"unspecified", "loopback", "link-local", "node", "cluster"}

// CountRebinding counts one answer address dropped by rebinding protection.
func (m *Metrics) CountRebinding(rng string) {
	if m == nil {
		return
	}
	m.DNSRebindingBlocked.WithLabelValues(rng).Inc()
}

// auditDropped is AuditOptions.OnDrop for a log that reports here.
func (m *Metrics) auditDropped() {
	if m == nil {
		return
	}
	m.AuditDropped.Inc()
}

// AuditDropHook returns a function for AuditOptions.OnDrop that counts
// egressd_audit_dropped_total.
func (m *Metrics) AuditDropHook() func() { return m.auditDropped }
