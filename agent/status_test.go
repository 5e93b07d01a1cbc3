package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/telemetry/event"
	"github.com/egressd/egressd/telemetry/statusapi"
)

// TestDNSEventsFillTheStatusRing: the resolver's event sink puts blocked
// lookups and quarantine refusals into the /status ring and passes every
// event on to the telemetry sinks.
func TestDNSEventsFillTheStatusRing(t *testing.T) {
	var rec event.Recorder
	a := &Agent{events: &event.Fanout{Sinks: []event.Sink{&rec}}}
	sink := a.dnsEvents()
	now := time.Now()
	for _, ev := range []event.Event{
		{Time: now, Name: event.TunnelSuspected, Workload: "apps/x", QName: "a.t.example."},
		{Time: now, Name: event.TunnelBlocked, Workload: "apps/x", QName: "b.t.example."},
		{Time: now, Name: event.LookupBlocked, Workload: "apps/x", QName: "c.example."},
		{Time: now, Name: event.LookupAllowed, Workload: "apps/x", QName: "d.example."},
	} {
		sink.Emit(context.Background(), ev)
	}
	if evs := rec.Events(); len(evs) != 4 || evs[0].Name != event.TunnelSuspected || evs[1].Name != event.TunnelBlocked || evs[0].Namespace != "apps" {
		t.Fatalf("telemetry got %+v", evs)
	}
	if st := a.blocked.Since(now.Add(-time.Minute), 10); st.Count != 2 {
		t.Fatalf("blocked ring %+v, want the quarantine refusal and the blocked lookup", st)
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
