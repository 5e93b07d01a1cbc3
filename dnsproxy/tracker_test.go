package dnsproxy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

// An S3-like name rotating through many addresses keeps at most max per
// (workload, name); the least recently answered go first and are counted.
func TestTrackerBoundLRU(t *testing.T) {
	tr := newTracker(3)
	w := policy.WorkloadKey{Namespace: "x", Name: "a"}
	now := time.Unix(1000, 0)
	exp := []time.Time{now.Add(time.Minute)}
	ip := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i)) }
	for i := 1; i <= 3; i++ {
		tr.record(w, "S3.example.com", []netip.Addr{ip(i)}, exp)
	}
	tr.record(w, "s3.example.com.", []netip.Addr{ip(1)}, exp) // 1 is the most recent again
	if n := tr.record(w, "s3.example.com", []netip.Addr{ip(4), ip(5)}, []time.Time{exp[0], exp[0]}); n != 2 {
		t.Fatalf("evicted %d, want 2", n)
	}
	got := map[netip.Addr]bool{}
	for _, e := range tr.snapshot(now) {
		if e.Name != "s3.example.com." {
			t.Fatalf("name %q", e.Name)
		}
		got[e.IP] = true
	}
	if len(got) != 3 || !got[ip(1)] || !got[ip(4)] || !got[ip(5)] {
		t.Fatalf("kept %v, want 10.0.0.1, .4, .5", got)
	}
	if tr.evictions.Load() != 2 {
		t.Fatalf("evictions %d", tr.evictions.Load())
	}
	// Another workload or name has its own bound.
	tr.record(policy.WorkloadKey{Namespace: "x", Name: "b"}, "s3.example.com", []netip.Addr{ip(9)}, exp)
	if tr.len() != 4 {
		t.Fatalf("len %d", tr.len())
	}
	// Expired entries are dropped by snapshot, not counted as evictions.
	if s := tr.snapshot(now.Add(2 * time.Minute)); len(s) != 0 || tr.len() != 0 || tr.evictions.Load() != 2 {
		t.Fatalf("after expiry: %v len %d evictions %d", s, tr.len(), tr.evictions.Load())
	}
}
