package event

import (
	"context"
	"testing"
	"time"
)

// The Fanout completes an event once (time, namespace from the workload) and
// hands the same event to every sink in order, skipping nil ones.
func TestFanoutCompletesAndPassesOn(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	var a, b Recorder
	var order []string
	f := &Fanout{Now: func() time.Time { return now }, Sinks: []Sink{
		SinkFunc(func(context.Context, Event) { order = append(order, "first") }),
		nil, &a, &b,
		SinkFunc(func(context.Context, Event) { order = append(order, "last") }),
	}}
	f.Emit(context.Background(), Event{Name: PacketDenied, Workload: "shop/web-1"})
	given := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Emit(context.Background(), Event{Name: LookupBlocked, Time: given, Workload: "x/y", Namespace: "kept"})
	f.Emit(context.Background(), Event{Name: PolicyReloadRecovered})

	for _, r := range []*Recorder{&a, &b} {
		evs := r.Events()
		if len(evs) != 3 {
			t.Fatalf("%d events", len(evs))
		}
		if evs[0].Time != now || evs[0].Namespace != "shop" {
			t.Errorf("not completed: %+v", evs[0])
		}
		if evs[1].Time != given || evs[1].Namespace != "kept" {
			t.Errorf("given fields overwritten: %+v", evs[1])
		}
		if evs[2].Namespace != "" {
			t.Errorf("namespace without a workload: %+v", evs[2])
		}
	}
	if len(order) != 6 || order[0] != "first" || order[1] != "last" {
		t.Errorf("order %v", order)
	}
	var nilFanout *Fanout
	nilFanout.Emit(context.Background(), Event{}) // no panic
	Discard.Emit(context.Background(), Event{})
}

func TestRecorder(t *testing.T) {
	var rec Recorder
	var s Sink = &rec
	s.Emit(context.Background(), Event{Name: LookupBlocked, QName: "a."})
	s.Emit(context.Background(), Event{Name: LookupAllowed, QName: "b."})
	if ev := rec.Named(LookupBlocked); len(ev) != 1 || ev[0].QName != "a." {
		t.Fatalf("%+v", ev)
	}
	if len(rec.Events()) != 2 {
		t.Fatal("Events")
	}
	rec.Reset()
	if len(rec.Events()) != 0 {
		t.Fatal("Reset")
	}
}

// Every name is listed once.
func TestNames(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range Names {
		if seen[n] {
			t.Errorf("%s twice", n)
		}
		seen[n] = true
	}
	if !IsTunnel(TunnelBlocked) || !IsTunnel(TunnelSuspected) || IsTunnel(LookupBlocked) {
		t.Error("IsTunnel")
	}
}
