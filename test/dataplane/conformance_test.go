package dataplane

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/scenarios"
)

// TestConformance applies every scenario of test/scenarios to the node, in one
// session (consecutive scenarios with the same node options reach the kernel
// as incremental changes; others as full applies, which adopt the table), and
// compares the measured TCP/UDP reachability with the engine's, IPv4 always and
// IPv6 for every third scenario. SCTP cells are checked on the programmed
// ruleset (TestSCTPRules).
func TestConformance(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	start := time.Now()
	sessions := map[policy.Verdict]*session{}
	var last policy.Verdict
	passed := 0
	all := scenarios.All()
	for i, sc := range all {
		ok := t.Run(sc.Name, func(t *testing.T) {
			def := sc.Options.DefaultVerdict
			if def == "" {
				def = policy.Allow
			}
			s := sessions[def]
			if s == nil {
				var err error
				if s, err = newSession(sc.Options); err != nil {
					t.Fatal(err)
				}
				sessions[def] = s
			}
			if def != last {
				s.needFull = true // the kernel holds the other session's plan
				last = def
			}
			plan, ch, eng, err := s.load(&sc)
			if err != nil {
				t.Fatal(err)
			}
			h.eng = eng
			if err := h.enf.Apply(ctx, plan, ch); err != nil {
				s.needFull = true
				t.Fatalf("apply: %v\nrendered:\n%s", err, h.enf.Render(plan))
			}
			if err := h.writeLookups(ctx, eng, plan, sc.Lookups); err != nil {
				t.Fatalf("lookups: %v", err)
			}
			fams := []scenarios.Family{scenarios.IPv4}
			if i%3 == 0 {
				fams = append(fams, scenarios.IPv6)
			}
			h.checkSCTP(t, sc.Name, plan)
			if !h.check(ctx, t, sc.Name, eng, plan, sc.Externals, fams...) {
				t.Logf("kernel ruleset:\n%s", h.ruleset())
			}
		})
		if ok {
			passed++
		}
	}
	t.Logf("conformance: %d/%d scenarios passed in %v", passed, len(all), time.Since(start).Round(time.Millisecond))
}

// TestConformanceRandom applies seeded random policy sets (scenarios.Random)
// incrementally one after the other and compares the measured IPv4 TCP/UDP
// reachability with the engine's (IPv6 for every tenth). EGRESSD_RANDOM_SETS
// overrides the number of sets (default 200).
func TestConformanceRandom(t *testing.T) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("EGRESSD_RANDOM_SETS")); err == nil && v > 0 {
		n = v
	}
	if testing.Short() {
		n = 20
	}
	h := newHarness(t)
	ctx := context.Background()
	start := time.Now()
	sessions := map[policy.Verdict]*session{}
	var last policy.Verdict
	passed, failed := 0, 0
	seeds := make([]int64, 0, n)
	for seed := int64(1); seed <= int64(n); seed++ {
		seeds = append(seeds, seed)
	}
	if v := os.Getenv("EGRESSD_RANDOM_SEEDS"); v != "" { // e.g. "150,151" to replay
		seeds = seeds[:0]
		for _, f := range strings.Split(v, ",") {
			if s, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64); err == nil {
				seeds = append(seeds, s)
			}
		}
		n = len(seeds)
	}
	for _, seed := range seeds {
		sc := scenarios.Random(seed)
		def := sc.Options.DefaultVerdict
		if def == "" {
			def = policy.Allow
		}
		s := sessions[def]
		if s == nil {
			var err error
			if s, err = newSession(sc.Options); err != nil {
				t.Fatal(err)
			}
			sessions[def] = s
		}
		if def != last {
			s.needFull = true
			last = def
		}
		plan, ch, eng, err := s.load(&sc)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		h.eng = eng
		if err := h.enf.Apply(ctx, plan, ch); err != nil {
			s.needFull = true
			t.Errorf("seed %d: apply: %v", seed, err)
			continue
		}
		if err := h.writeLookups(ctx, eng, plan, sc.Lookups); err != nil {
			t.Errorf("seed %d: lookups: %v", seed, err)
			continue
		}
		fams := []scenarios.Family{scenarios.IPv4}
		if seed%10 == 0 {
			fams = append(fams, scenarios.IPv6)
		}
		h.checkSCTP(t, sc.Name, plan)
		if h.check(ctx, t, sc.Name, eng, plan, sc.Externals, fams...) {
			passed++
		} else {
			t.Logf("%s policies:\n%s", sc.Name, strings.Join(sc.Policies, "---\n"))
			if failed++; failed > 5 {
				t.Fatalf("too many mismatches; stopping")
			}
		}
	}
	t.Logf("random conformance: %d/%d policy sets passed in %v", passed, n, time.Since(start).Round(time.Millisecond))
}
