package statusapi

import (
	"fmt"
	"testing"
	"time"
)

// TestBlockedRingWindowAndTop: only lookups inside the window count, the top
// lists are ordered by count, and a wrapped ring says so.
func TestBlockedRingWindowAndTop(t *testing.T) {
	var r BlockedRing
	now := time.Now()
	r.Add(now.Add(-time.Hour), "a/old", "old.example")
	for i := range 3 {
		r.Add(now.Add(-time.Duration(i)*time.Second), "shop/web", "evil.example")
	}
	r.Add(now, "", "other.example")
	st := r.Since(now.Add(-10*time.Minute), 10)
	if st.Count != 4 || st.Total != 5 || st.Truncated {
		t.Fatalf("count %d total %d truncated %v, want 4, 5, false", st.Count, st.Total, st.Truncated)
	}
	if st.TopNames[0] != (Counted{"evil.example", 3}) || st.TopNames[1] != (Counted{"other.example", 1}) || len(st.TopNames) != 2 {
		t.Errorf("top names %v", st.TopNames)
	}
	if st.TopWorkloads[0] != (Counted{"shop/web", 3}) || st.TopWorkloads[1] != (Counted{"(unknown client)", 1}) {
		t.Errorf("top workloads %v", st.TopWorkloads)
	}
	for i := range BlockedRingSize {
		r.Add(now, "w/x", fmt.Sprintf("n%d.example", i%20))
	}
	st = r.Since(now.Add(-10*time.Minute), 5)
	if st.Count != BlockedRingSize || !st.Truncated || len(st.TopNames) != 5 {
		t.Errorf("after wrapping: count %d truncated %v top %d, want %d, true, 5", st.Count, st.Truncated, len(st.TopNames), BlockedRingSize)
	}
}
