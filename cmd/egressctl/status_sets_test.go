package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestStatusShowsTruncatedCount: a set the agent stopped counting at its
// bound is shown as "N+" (at least N), a complete count as is.
func TestStatusShowsTruncatedCount(t *testing.T) {
	var st agentStatus
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
