package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/egressd/egressd/dnsproxy"
)

// TestBlockedRingWindowAndTop: only lookups inside the window count, the top
// lists are ordered by count, and a wrapped ring says so.
func TestBlockedRingWindowAndTop(t *testing.T) {
	var r blockedRing
	now := time.Now()
	r.add(blockedLookup{at: now.Add(-time.Hour), workload: "a/old", name: "old.example"})
	for i := range 3 {
		r.add(blockedLookup{at: now.Add(-time.Duration(i) * time.Second), workload: "shop/web", name: "evil.example"})
	}
	r.add(blockedLookup{at: now, workload: "", name: "other.example"})
	st := r.since(now.Add(-10*time.Minute), 10)
	if st.Count != 4 || st.Total != 5 || st.Truncated {
		t.Fatalf("count %d total %d truncated %v, want 4, 5, false", st.Count, st.Total, st.Truncated)
	}
	if st.TopNames[0] != (Counted{"evil.example", 3}) || st.TopNames[1] != (Counted{"other.example", 1}) || len(st.TopNames) != 2 {
		t.Errorf("top names %v", st.TopNames)
	}
	if st.TopWorkloads[0] != (Counted{"shop/web", 3}) || st.TopWorkloads[1] != (Counted{"(unknown client)", 1}) {
		t.Errorf("top workloads %v", st.TopWorkloads)
	}
	for i := range blockedRingSize {
		r.add(blockedLookup{at: now, workload: "w/x", name: fmt.Sprintf("n%d.example", i%20)})
	}
	st = r.since(now.Add(-10*time.Minute), 5)
	if st.Count != blockedRingSize || !st.Truncated || len(st.TopNames) != 5 {
		t.Errorf("after wrapping: count %d truncated %v top %d, want %d, true, 5", st.Count, st.Truncated, len(st.TopNames), blockedRingSize)
	}
}

// tunnelRecorder is a resolver Reporter that takes tunnel events.
type tunnelRecorder struct {
	dnsproxy.NopReporter
	events []string
}

func (r *tunnelRecorder) TunnelEvent(_ context.Context, ev dnsproxy.Event) {
	r.events = append(r.events, ev.Event)
}

// TestStatusReporterPassesTunnelEvents: the /status wrapper around the
// resolver's reporter still delivers tunnel events (the resolver finds them
// through an optional interface the wrapper must not hide) and counts
// quarantine refusals as blocked lookups.
func TestStatusReporterPassesTunnelEvents(t *testing.T) {
	a := &agent{}
	inner := &tunnelRecorder{}
	r, ok := a.withStatus(inner).(dnsproxy.TunnelReporter)
	if !ok {
		t.Fatal("the wrapped reporter does not take tunnel events")
	}
	now := time.Now()
	r.TunnelEvent(context.Background(), dnsproxy.Event{Time: now, Event: dnsproxy.EventTunnelSuspected, Workload: "apps/x", QName: "a.t.example."})
	r.TunnelEvent(context.Background(), dnsproxy.Event{Time: now, Event: dnsproxy.EventTunnelBlocked, Workload: "apps/x", QName: "b.t.example."})
	if len(inner.events) != 2 || inner.events[0] != dnsproxy.EventTunnelSuspected || inner.events[1] != dnsproxy.EventTunnelBlocked {
		t.Fatalf("inner reporter got %v", inner.events)
	}
	if st := a.blocked.since(now.Add(-time.Minute), 10); st.Count != 1 || st.TopNames[0].Key != "b.t.example" {
		t.Fatalf("blocked ring %+v, want the quarantine refusal only", st)
	}
	// The agent's own reporter chain takes them too.
	if _, ok := a.withStatus(a.reporter()).(dnsproxy.TunnelReporter); !ok {
		t.Fatal("withStatus(reporter()) hides TunnelReporter")
	}
}
