package telemetry

import (
	"context"
	"testing"

	"github.com/egressd/egressd/telemetry/event"
)

func TestNewTracerProviderEmptyEndpointIsNoop(t *testing.T) {
	tp, err := NewTracerProvider(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("x").Start(context.Background(), event.LookupBlocked)
	if span.IsRecording() || span.SpanContext().IsSampled() {
		t.Error("span recorded without an endpoint")
	}
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNewTracerProviderConfig(t *testing.T) {
	if _, err := NewTracerProvider(context.Background(), Config{Endpoint: "127.0.0.1:1", Protocol: "thrift"}); err == nil {
		t.Error("unknown protocol accepted")
	}
	for _, cfg := range []Config{
		{Endpoint: "127.0.0.1:1", Insecure: true},
		{Endpoint: "127.0.0.1:1", Protocol: "http", Insecure: true, Headers: map[string]string{"authorization": "x"}},
		{Endpoint: "http://127.0.0.1:1", Protocol: "http"},
		{Endpoint: "http://127.0.0.1:1", Protocol: "grpc"},
	} {
		tp, err := NewTracerProvider(context.Background(), cfg)
		if err != nil {
			t.Errorf("%+v: %v", cfg, err)
			continue
		}
		// Nothing listens: Shutdown must still return (with an export error or not) once
		// its context ends, and nothing was queued, so it returns promptly.
		ctx, cancel := context.WithTimeout(context.Background(), 2e9)
		tp.Shutdown(ctx)
		cancel()
	}
	s := NewSampler(0.25)
	if s.Description() != "EgressdSampler{allowed=0.25}" {
		t.Error(s.Description())
	}
}
