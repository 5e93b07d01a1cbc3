package preresolve

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

// BenchmarkPreresolveMemory: the agent's memory for 1,000 pre-resolved names
// (10 Deny rules of 100 exact names, 2 IPv4 and 2 IPv6 addresses each, TTL
// 60 s), reported as bytes per name (heap in use after a GC, the plan's own
// memory excluded), and the schedule's queries a minute. One iteration
// resolves every name once. The policy model's copy (policy.Store) is
// included; the kernel's elements are not.
func BenchmarkPreresolveMemory(b *testing.B) {
	const rules, perRule = 10, 100
	z := zone{}
	var docs []string
	for r := range rules {
		var to []string
		for n := range perRule {
			name := fmt.Sprintf("n%d-%d.pool.test", r, n)
			to = append(to, fmt.Sprintf("{fqdn: {matchName: %s}}", name))
			z[name] = []string{
				fmt.Sprintf("%s. 60 IN A 192.0.%d.%d", name, r, n), fmt.Sprintf("%s. 60 IN A 198.51.%d.%d", name, r, n),
				fmt.Sprintf("%s. 60 IN AAAA 2001:db8:%x::%x", name, r, n), fmt.Sprintf("%s. 60 IN AAAA 2001:db8:%x::1:%x", name, r, n),
			}
		}
		docs = append(docs, "{action: Deny, to: ["+strings.Join(to, ", ")+"]}")
	}
	t := &testing.T{}
	plan := planOf(t, docs...)
	var perName, qpm float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h := newHarness(t, Config{}, z)
		h.sets = nil
		h.r.deps.Sets = nil     // the kernel's share is its own (elements)
		st := policy.NewStore() // the policy model's copy of the addresses
		h.r.deps.Record = st.RecordDenyResolved
		h.r.applyPlan(context.Background(), plan)
		h.resolveDue()
		h.asked = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		s := h.r.Stats()
		if s.Names != rules*perRule || s.Addresses != 4*rules*perRule {
			b.Fatalf("stats %+v", s)
		}
		perName = float64(after.HeapInuse-before.HeapInuse) / float64(s.Names)
		qpm = s.QueriesPerMinute
		runtime.KeepAlive(h)
		runtime.KeepAlive(st)
	}
	b.ReportMetric(perName, "B/name")
	b.ReportMetric(qpm, "queries/min")
}
