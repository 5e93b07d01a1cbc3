package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/egressd/egressd/telemetry/event"
)

// Config configures the OTLP tracer provider.
type Config struct {
	// Endpoint of the OTLP receiver: "host:port" or a URL ("http://host:4318",
	// "https://collector:4317"; for HTTP a URL path replaces /v1/traces). Empty: tracing
	// is off (a provider that samples nothing and exports nothing).
	Endpoint string
	// Protocol is "grpc" (default) or "http" (OTLP/HTTP protobuf).
	Protocol string
	// Insecure disables TLS (plain-text gRPC / http://). An http:// URL implies it.
	Insecure bool
	// ServiceName is the service.name resource attribute (default "egressd").
	ServiceName string
	// ServiceVersion, when set, is the service.version resource attribute.
	ServiceVersion string
	// HostName is host.name (default os.Hostname()).
	HostName string
	// NodeName, when set, is k8s.node.name.
	NodeName string
	// SampleAllowed is the fraction (0..1) of dns.lookup.allowed events recorded as spans.
	// Every other event is always recorded.
	SampleAllowed float64
	// Headers are sent with every export (e.g. authentication).
	Headers map[string]string
	// Timeout of one export (default 10s).
	Timeout time.Duration
	// BatchTimeout is the longest a span waits in the batch processor (default 1s).
	BatchTimeout time.Duration
	// MaxQueueSize of the batch processor (default 4096); spans beyond it are dropped,
	// the hot path never blocks on export.
	MaxQueueSize int
}

// NewTracerProvider builds an SDK tracer provider exporting over OTLP through a batch
// span processor, with service.name, host.name and (if given) k8s.node.name resource
// attributes and the egressd sampler (every event span, allowed lookups at
// SampleAllowed). With an empty Endpoint it returns a provider that samples nothing (its
// spans are non-recording and cost next to nothing) and has no exporter. Shutdown on the
// returned provider flushes pending spans.
func NewTracerProvider(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	if cfg.Endpoint == "" {
		return sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample())), nil
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "egressd"
	}
	if cfg.HostName == "" {
		cfg.HostName, _ = os.Hostname()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = time.Second
	}
	if cfg.MaxQueueSize <= 0 {
		cfg.MaxQueueSize = 4096
	}

	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	if cfg.HostName != "" {
		attrs = append(attrs, attribute.String("host.name", cfg.HostName))
	}
	if cfg.NodeName != "" {
		attrs = append(attrs, attribute.String("k8s.node.name", cfg.NodeName))
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(NewSampler(cfg.SampleAllowed)),
		sdktrace.WithBatcher(exp,
			sdktrace.WithBatchTimeout(cfg.BatchTimeout),
			sdktrace.WithMaxQueueSize(cfg.MaxQueueSize),
			sdktrace.WithExportTimeout(cfg.Timeout),
		),
	), nil
}

func newExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	isURL := strings.Contains(cfg.Endpoint, "://")
	switch strings.ToLower(cfg.Protocol) {
	case "", "grpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithTimeout(cfg.Timeout)}
		if isURL {
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		} else {
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(cfg.Headers))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP gRPC exporter: %w", err)
		}
		return exp, nil
	case "http", "http/protobuf":
		opts := []otlptracehttp.Option{otlptracehttp.WithTimeout(cfg.Timeout)}
		if isURL {
			opts = append(opts, otlptracehttp.WithEndpointURL(cfg.Endpoint))
		} else {
			opts = append(opts, otlptracehttp.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(cfg.Headers))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP HTTP exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("telemetry: unknown OTLP protocol %q (want grpc or http)", cfg.Protocol)
	}
}

// NewSampler returns egressd's sampler: spans named dns.lookup.allowed are sampled at the
// ratio sampleAllowed (by trace ID), every other span is always sampled.
func NewSampler(sampleAllowed float64) sdktrace.Sampler {
	var allowed sdktrace.Sampler
	switch {
	case sampleAllowed <= 0:
		allowed = sdktrace.NeverSample()
	case sampleAllowed >= 1:
		allowed = sdktrace.AlwaysSample()
	default:
		allowed = sdktrace.TraceIDRatioBased(sampleAllowed)
	}
	return eventSampler{allowed: allowed, ratio: sampleAllowed}
}

type eventSampler struct {
	allowed sdktrace.Sampler
	ratio   float64
}

func (s eventSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.Name == event.LookupAllowed {
		return s.allowed.ShouldSample(p)
	}
	return sdktrace.SamplingResult{
		Decision:   sdktrace.RecordAndSample,
		Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState(),
	}
}

func (s eventSampler) Description() string {
	return fmt.Sprintf("EgressdSampler{allowed=%g}", s.ratio)
}

// OTelErrorHandler returns an otel.ErrorHandler that counts SDK errors (export failures)
// in egressd_trace_export_errors_total and passes them on to next (may be nil). The agent
// installs it with otel.SetErrorHandler.
func (m *Metrics) OTelErrorHandler(next func(error)) otel.ErrorHandler {
	return otel.ErrorHandlerFunc(func(err error) {
		if m != nil {
			m.TraceExportErrors.Inc()
		}
		if next != nil {
			next(err)
		}
	})
}
