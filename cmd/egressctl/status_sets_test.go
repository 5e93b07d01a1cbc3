package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/statusapi"
)

// TestStatusShowsTruncatedCount: a set the agent stopped counting at its
// bound is shown as "N+" (at least N), a complete count as is.
func TestStatusShowsTruncatedCount(t *testing.T) {
	var st statusapi.Status
	doc := `{"sets":[{"name":"fq_big_v4","elements":100000,"truncated":true},{"name":"fq_small_v4","elements":7}]}`
	if err := json.Unmarshal([]byte(doc), &st); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printStatus(&b, &st, time.Minute)
	out := b.String()
	if !strings.Contains(out, "100000+") || strings.Contains(out, " 7+") || !strings.Contains(out, "fq_small_v4  set   7\n") {
		t.Fatalf("sets table:\n%s", out)
	}
}

// TestStatusShowsAgentDocument: a statusapi.Status as the agent encodes it
// (the shared wire type) is decoded and shown section by section, and -o json
// passes the document through unchanged.
func TestStatusShowsAgentDocument(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	doc, err := json.Marshal(statusapi.Status{
		Node: "n1", Ready: true, StartedAt: at.Add(-time.Hour), Now: at, Dataplane: "nftables", Table: "egressd",
		Sync:      statusapi.SyncStatus{Source: "kubernetes", SourceSynced: true, Policies: 2, InvalidPolicies: map[string]string{"ns/bad": "no selector"}},
		Sets:      []statusapi.SetStatus{{Name: "fq_1_v4", Elements: 3}},
		Blocked:   statusapi.BlockedStatus{Count: 2, Total: 5, TopNames: []statusapi.Counted{{Key: "evil.example", Count: 2}}, TopWorkloads: []statusapi.Counted{{Key: "shop/web", Count: 2}}},
		Resolver:  map[string]uint64{"Queries": 42, "Blocked": 2},
		Upstreams: []statusapi.UpstreamStatus{{Addr: "10.0.0.10:53", Up: true}},
		Intercept: []string{"10.96.0.10:53"},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(doc) }))
	defer srv.Close()
	t.Setenv("EGRESSD_TOKEN", "")
	out, errOut, code := runCmd(t, "status", "--agent", srv.URL)
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"node n1, ready yes, up 1h0m0s", "kubernetes, synced yes", "ns/bad: no selector",
		"fq_1_v4", "Blocked lookups in the last 10m0s: 2 (5 since start)", "evil.example  2", "shop/web  2",
		"Queries  42", "10.0.0.10:53 up", "10.96.0.10:53"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	if out, _, code := runCmd(t, "status", "--agent", srv.URL, "-o", "json"); code != 0 || out != string(doc) {
		t.Errorf("-o json: code %d, %s\nwant %s", code, out, doc)
	}
}
