package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/source/file"
	"github.com/egressd/egressd/telemetry"
)

// startTelemetry opens the audit log and the trace exporter and builds the
// reporter every component reports through; the returned function flushes
// and closes them.
func (a *agent) startTelemetry(ctx context.Context) (func(), error) {
	a.metrics = telemetry.NewMetrics()
	var audit *telemetry.AuditLog
	if a.cfg.AuditLog != "" || a.cfg.AuditStdout {
		opts := telemetry.AuditOptions{Path: a.cfg.AuditLog, OnDrop: a.metrics.AuditDropHook()}
		if a.cfg.AuditStdout {
			opts.Stdout = os.Stdout
		}
		var err error
		if audit, err = telemetry.NewAuditLog(opts); err != nil {
			return nil, fmt.Errorf("--audit-log: %w", err)
		}
	}
	var tp *sdktrace.TracerProvider
	if a.cfg.OTLPEndpoint != "" {
		host, _ := os.Hostname()
		var err error
		tp, err = telemetry.NewTracerProvider(ctx, telemetry.Config{
			Endpoint: a.cfg.OTLPEndpoint, Protocol: a.cfg.OTLPProtocol, Insecure: true,
			ServiceName: "egressd", HostName: host, NodeName: a.cfg.NodeName,
			SampleAllowed: a.cfg.TraceSampleAllowed, // dns_flags.go
		})
		if err != nil {
			return nil, fmt.Errorf("--otlp-endpoint: %w", err)
		}
	}
	opts := telemetry.ReporterOptions{Audit: audit, Metrics: a.metrics}
	if tp != nil {
		opts.TracerProvider = tp
	}
	a.events = telemetry.NewReporter(opts)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if tp != nil {
			if err := tp.Shutdown(sctx); err != nil {
				a.log.Warn("trace exporter shutdown", "err", err)
			}
		}
		if audit != nil {
			if err := audit.Close(); err != nil {
				a.log.Warn("audit log close", "err", err)
			}
		}
	}, nil
}

// sourceHooks report the policy file source's loads: the reload metrics, and
// one policy.reload.failed event per distinct problem.
func (a *agent) sourceHooks() file.Hooks {
	return file.Hooks{
		Loaded: a.metrics.ObservePolicyReload,
		Failed: func(p file.Problem) {
			a.events.Report(context.Background(), telemetry.Event{
				Event: telemetry.EventPolicyReloadFailed, Reason: p.Kind,
				Attrs: map[string]string{"file.path": p.File, "error.message": p.Message(), "egressd.kept": strconv.Itoa(p.Kept)},
			})
		},
		Recovered: func() {
			a.events.Report(context.Background(), telemetry.Event{Event: telemetry.EventPolicyReloadRecovered})
		},
	}
}

// dnsReporter adapts the resolver's events to the telemetry reporter.
// withOrigDst, when set, takes over reporting a blocked or audited lookup to
// add the original destination of a redirected query first (sidedoors.go: a
// conntrack lookup, off the query path); false: report it here as it is.
type dnsReporter struct {
	r           *telemetry.Reporter
	withOrigDst func(ctx context.Context, ev dnsproxy.Event, tev telemetry.Event) bool
}

func (d dnsReporter) report(ctx context.Context, name string, ev dnsproxy.Event) {
	ns, _, _ := strings.Cut(ev.Workload, "/")
	tev := telemetry.Event{
		Time: ev.Time, Event: name, Workload: ev.Workload, Namespace: ns, Client: ev.Client,
		QName: ev.QName, QType: ev.QType, Policy: ev.Policy, Rule: ev.Rule, Tier: ev.Tier,
		Reason: ev.Reason, Response: ev.Response, CNAME: ev.CNAME,
	}
	if d.withOrigDst != nil && name != telemetry.EventLookupAllowed && d.withOrigDst(ctx, ev, tev) {
		return
	}
	d.r.Report(ctx, tev)
}

// AttrOriginalDestination is the event attribute naming where a redirected
// query was sent (the pod's choice, e.g. 8.8.8.8:53).
const AttrOriginalDestination = "egressd.dns.original_destination"

func (d dnsReporter) LookupBlocked(ctx context.Context, ev dnsproxy.Event) {
	d.report(ctx, telemetry.EventLookupBlocked, ev)
}

func (d dnsReporter) LookupAudit(ctx context.Context, ev dnsproxy.Event) {
	d.report(ctx, telemetry.EventLookupAudit, ev)
}

func (d dnsReporter) LookupAllowed(ctx context.Context, ev dnsproxy.Event) {
	d.report(ctx, telemetry.EventLookupAllowed, ev)
}

// AnswerCapped reports dns.answer.capped: addresses of an answer dropped by a
// bound (dnsproxy/limits.go), the bound in reason, their number in
// egressd.dropped.
func (d dnsReporter) AnswerCapped(ctx context.Context, ev dnsproxy.Event) {
	ns, _, _ := strings.Cut(ev.Workload, "/")
	d.r.Report(ctx, telemetry.Event{
		Time: ev.Time, Event: telemetry.EventAnswerCapped, Workload: ev.Workload, Namespace: ns, Client: ev.Client,
		QName: ev.QName, QType: ev.QType, Reason: ev.Reason, Response: ev.Response,
		Attrs: map[string]string{"egressd.dropped": strconv.Itoa(ev.Dropped)},
	})
}

var _ dnsproxy.CapReporter = dnsReporter{}

// RebindingBlocked implements dnsproxy.RebindReporter: the dropped addresses go
// in the attribute egressd.rebinding.dropped.
func (d dnsReporter) RebindingBlocked(ctx context.Context, ev dnsproxy.Event) {
	ns, _, _ := strings.Cut(ev.Workload, "/")
	d.r.Report(ctx, telemetry.Event{
		Time: ev.Time, Event: telemetry.EventRebindingBlocked, Workload: ev.Workload, Namespace: ns, Client: ev.Client,
		QName: ev.QName, QType: ev.QType, Reason: ev.Reason, Response: ev.Response,
		Attrs: map[string]string{"egressd.rebinding.dropped": strings.Join(ev.RebindAddrs, ", ")},
	})
}

func (a *agent) reporter() dnsproxy.Reporter {
	return dnsReporter{r: a.events, withOrigDst: a.queueOrigDst}
}

// observer feeds the resolver's latencies into the metrics.
func (a *agent) observer() dnsproxy.Observer {
	m := a.metrics
	return dnsproxy.Observer{
		Upstream: func(_ string, d time.Duration, err error) {
			if err == nil {
				m.ObserveUpstream(d)
			}
		},
		SetWrite: func(_ int, d time.Duration, err error) { m.ObserveSetWrite(d, err) },
		Result:   m.DNSQuery, // dnsproxy.Result* are the result label's values
		CacheHit: m.DNSCacheHit,
		// Once per transition, not per failed query.
		UpstreamHealth: func(upstream string, up bool) {
			m.SetUpstreamUp(upstream, up)
			if up {
				a.log.Info("upstream resolver answers again", "upstream", upstream)
			} else {
				a.log.Warn("upstream resolver down: lookups go to the other upstreams, SERVFAIL when none answers", "upstream", upstream)
			}
		},
		Rebinding: m.CountRebinding,
	}
}
