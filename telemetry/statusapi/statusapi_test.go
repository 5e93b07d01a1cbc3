package statusapi

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestStatusJSONNames pins the wire names of every field: a Status with
// every field set encodes to exactly the document clients read (docs/egressd.md
// "/status"), and decodes back to the same value.
func TestStatusJSONNames(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := Status{
		Node: "n1", Ready: true, StartedAt: at, Now: at,
		Sync: SyncStatus{
			Source: "files", SourceSynced: true, StoreGeneration: 3, Policies: 2, Workloads: 5,
			AppliedPlan: 4, LastApply: at, LastError: "e",
			InvalidPolicies: map[string]string{"ns/p": "bad"},
			Reload:          &ReloadStatus{OK: false, LastError: "r", File: "/p.yaml", Since: at, Problems: 1, LastOK: at},
		},
		Dataplane: "nftables", Table: "egressd",
		Sets:      []SetStatus{{Name: "s", Map: true, Elements: 7, Truncated: true}},
		SetsError: "se",
		Blocked: BlockedStatus{Since: at, Count: 1, Truncated: true,
			TopNames: []Counted{{Key: "a.example", Count: 1}}, TopWorkloads: []Counted{{Key: "x/a", Count: 1}}, Total: 9},
		Resolver:  map[string]uint64{"Queries": 1},
		Upstreams: []UpstreamStatus{{Addr: "10.0.0.10:53", Up: false, Since: at}},
		Intercept: []string{"10.96.0.10:53"},
	}
	const want = `{"node":"n1","ready":true,"startedAt":"2026-01-02T03:04:05Z","now":"2026-01-02T03:04:05Z",` +
		`"sync":{"source":"files","sourceSynced":true,"storeGeneration":3,"policies":2,"workloads":5,"appliedPlanGeneration":4,` +
		`"lastApplyTime":"2026-01-02T03:04:05Z","lastError":"e","invalidPolicies":{"ns/p":"bad"},` +
		`"reload":{"ok":false,"lastError":"r","file":"/p.yaml","since":"2026-01-02T03:04:05Z","problems":1,"lastOK":"2026-01-02T03:04:05Z"}},` +
		`"dataplane":"nftables","table":"egressd","sets":[{"name":"s","map":true,"elements":7,"truncated":true}],"setsError":"se",` +
		`"blocked":{"since":"2026-01-02T03:04:05Z","count":1,"truncated":true,"topNames":[{"key":"a.example","count":1}],` +
		`"topWorkloads":[{"key":"x/a","count":1}],"total":9},"resolver":{"Queries":1},` +
		`"upstreams":[{"addr":"10.0.0.10:53","up":false,"since":"2026-01-02T03:04:05Z"}],"dnsIntercept":["10.96.0.10:53"]}`
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("encoded:\n%s\nwant:\n%s", b, want)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Errorf("decoded %+v\nwant %+v", back, st)
	}
}

// TestStatusOmitsEmpty: the optional parts are left out when empty, the
// always-present ones (sets, blocked lists) are not.
func TestStatusOmitsEmpty(t *testing.T) {
	b, err := json.Marshal(Status{Sets: []SetStatus{}, Blocked: BlockedStatus{TopNames: []Counted{}, TopWorkloads: []Counted{}}})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"node":"","ready":false,"startedAt":"0001-01-01T00:00:00Z","now":"0001-01-01T00:00:00Z",` +
		`"sync":{"source":"","sourceSynced":false,"storeGeneration":0,"policies":0,"workloads":0,"appliedPlanGeneration":0},` +
		`"dataplane":"","sets":[],"blocked":{"since":"0001-01-01T00:00:00Z","count":0,"topNames":[],"topWorkloads":[],"total":0}}`
	if string(b) != want {
		t.Fatalf("encoded:\n%s\nwant:\n%s", b, want)
	}
}
