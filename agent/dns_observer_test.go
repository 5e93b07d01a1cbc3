package agent

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/telemetry"
)

// TestResolverObserverFeedsMetrics: the observer the agent gives the resolver
// counts queries by the documented result label and cache hits.
func TestResolverObserverFeedsMetrics(t *testing.T) {
	cfg, err := ParseFlags([]string{"--policies", "x", "--workloads", "y"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	stop, err := a.startTelemetry(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	o := a.observer()
	for _, r := range []string{dnsproxy.ResultAllowed, dnsproxy.ResultAllowed, dnsproxy.ResultBlocked, dnsproxy.ResultRefused} {
		o.Result(r)
	}
	o.CacheHit()
	o.Upstream("127.0.0.1:53", time.Millisecond, nil)
	got := map[string]float64{}
	mfs, err := a.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"egressd_dns_queries_total{result=" + telemetry.ResultAllowed + "}": 2,
		"egressd_dns_queries_total{result=" + telemetry.ResultBlocked + "}": 1,
		"egressd_dns_queries_total{result=" + telemetry.ResultRefused + "}": 1,
		"egressd_dns_queries_total{result=" + telemetry.ResultError + "}":   0,
		"egressd_dns_cache_hits_total":                                      1,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
}

// TestTraceSampleAllowedFlag: --trace-sample-allowed defaults to 1% and must
// lie in [0, 1].
func TestTraceSampleAllowedFlag(t *testing.T) {
	base := []string{"--policies", "x", "--workloads", "y"}
	c, err := ParseFlags(base, nil)
	if err != nil || c.TraceSampleAllowed != 0.01 {
		t.Fatalf("default: %v, %v", c, err)
	}
	if c, err = ParseFlags(append(base, "--trace-sample-allowed", "1"), nil); err != nil || c.TraceSampleAllowed != 1 {
		t.Fatalf("1: %v", err)
	}
	for _, bad := range []string{"-0.1", "1.5"} {
		if _, err := ParseFlags(append(base, "--trace-sample-allowed", bad), nil); err == nil {
			t.Errorf("--trace-sample-allowed %s accepted", bad)
		}
	}
}
