package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/source/file"
	"github.com/egressd/egressd/telemetry"
	"github.com/egressd/egressd/telemetry/event"
)

// startTelemetry opens the audit log and the trace exporter and joins them
// and the metrics into the event sink every component emits to; the returned function flushes
// and closes them.
func (a *Agent) startTelemetry(ctx context.Context) (func(), error) {
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
	spans := telemetry.NewSpans(nil)
	if tp != nil {
		spans = telemetry.NewSpans(tp)
	}
	a.events = &event.Fanout{Sinks: []event.Sink{audit, spans, a.metrics}}
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
func (a *Agent) sourceHooks() file.Hooks {
	return file.Hooks{
		Loaded: a.metrics.ObservePolicyReload,
		Failed: func(p file.Problem) {
			a.events.Emit(context.Background(), event.Event{
				Name: event.PolicyReloadFailed, Reason: p.Kind,
				Attrs: map[string]string{"file.path": p.File, "error.message": p.Message(), "egressd.kept": strconv.Itoa(p.Kept)},
			})
		},
		Recovered: func() {
			a.events.Emit(context.Background(), event.Event{Name: event.PolicyReloadRecovered})
		},
	}
}

// AttrOriginalDestination is the event attribute naming where a redirected
// query was sent (the pod's choice, e.g. 8.8.8.8:53).
const AttrOriginalDestination = "egressd.dns.original_destination"

// dnsEvents is the resolver's event sink: blocked lookups go into the /status
// ring at once; blocked and audited lookups wait for the original destination
// of a redirected query when the side doors can look it up (sidedoors.go, off
// the query path); everything else goes to the telemetry sinks as it is.
func (a *Agent) dnsEvents() event.Sink {
	return &event.Fanout{Sinks: []event.Sink{&a.blocked, event.SinkFunc(func(ctx context.Context, ev event.Event) {
		if (ev.Name == event.LookupBlocked || ev.Name == event.LookupAudit) && a.queueOrigDst(ctx, ev) {
			return
		}
		a.events.Emit(ctx, ev)
	})}}
}

// observer feeds the resolver's latencies into the metrics.
func (a *Agent) observer() dnsproxy.Observer {
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
