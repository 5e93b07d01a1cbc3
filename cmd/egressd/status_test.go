package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/telemetry/statusapi"
)

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
	if st := a.blocked.Since(now.Add(-time.Minute), 10); st.Count != 1 || st.TopNames[0].Key != "b.t.example" {
		t.Fatalf("blocked ring %+v, want the quarantine refusal only", st)
	}
	// The agent's own reporter chain takes them too.
	if _, ok := a.withStatus(a.reporter()).(dnsproxy.TunnelReporter); !ok {
		t.Fatal("withStatus(reporter()) hides TunnelReporter")
	}
}

// TestStatusDocumentRoundTrip: the document an agent with a running resolver
// serves on /status decodes into statusapi.Status (the type egressctl
// decodes) with no unknown field, and encodes back to the same bytes: nothing
// the agent sends is lost to the CLI. The resolver's counters keep the
// dnsproxy.Stats field names as keys.
func TestStatusDocumentRoundTrip(t *testing.T) {
	a, _ := testAgent(t, "--listen", "127.0.0.1:0")
	stop, err := a.startDNS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	a.blocked.Add(time.Now(), "x/a", "evil.example")
	h, err := a.httpHandler()
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, h, "/status?since=1h", "")
	if code != 200 {
		t.Fatalf("/status: %d %q", code, body)
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var st statusapi.Status
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("egressctl's type does not take the agent's document: %v\n%s", err, body)
	}
	var again bytes.Buffer
	enc := json.NewEncoder(&again)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		t.Fatal(err)
	}
	if again.String() != body {
		t.Errorf("round trip changed the document:\nagent: %s\nagain: %s", body, again.String())
	}
	if n := reflect.TypeFor[dnsproxy.Stats]().NumField(); len(st.Resolver) != n {
		t.Errorf("resolver has %d counters, dnsproxy.Stats %d fields", len(st.Resolver), n)
	}
	if _, ok := st.Resolver["Queries"]; !ok {
		t.Errorf("resolver lacks Queries: %v", st.Resolver)
	}
	if len(st.Upstreams) != 1 || st.Upstreams[0].Addr != "127.0.0.1:53" {
		t.Errorf("upstreams %+v, want 127.0.0.1:53", st.Upstreams)
	}
	if st.Sync.Source != "files" || st.Sync.Policies != 1 || st.Sync.Reload == nil || !st.Sync.Reload.OK {
		t.Errorf("sync %+v", st.Sync)
	}
	if st.Blocked.Count != 1 || st.Blocked.TopNames[0] != (statusapi.Counted{Key: "evil.example", Count: 1}) {
		t.Errorf("blocked %+v", st.Blocked)
	}
}
