package file

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// bigPolicyFile is a file of n Admin policies with an FQDN Deny rule each
// (their patterns end in suffix), between two policies that decide
// probe.example: first (priority firstPrio, Allow, rule firstRule) and last
// (priority lastPrio, Deny, rule lastRule).
func bigPolicyFile(n int, suffix string, firstPrio, lastPrio int, firstRule, lastRule string) string {
	var b bytes.Buffer
	probe := func(name string, prio int, action, rule string) {
		fmt.Fprintf(&b, "---\napiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: %s}\nspec: {tier: Admin, priority: %d, subject: {namespaceSelector: {}}, egress: [{name: %s, action: %s, to: [{fqdn: {matchName: probe.example}}]}]}\n", name, prio, rule, action)
	}
	probe("aaa-first", firstPrio, "Allow", firstRule)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "---\napiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: filler-%05d}\nspec: {tier: Admin, priority: %d, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchPattern: \"*.pool%d.%s\"}}]}]}\n", i, i%100, i, suffix)
	}
	probe("zzz-last", lastPrio, "Deny", lastRule)
	return b.String()
}

// TestHugeReloadIsAtomicAndLookupsGoOn: reloading 10,000 changed policies
// swaps them in at once — a lookup running all along sees the old decision
// or the new one, never one of the mixed states a policy-by-policy reload
// goes through — and lookups keep being answered while the file is decoded
// and validated.
func TestHugeReloadIsAtomicAndLookupsGoOn(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 2000
	}
	dir := t.TempDir()
	wl := filepath.Join(dir, "workloads.yaml")
	write(t, wl, workloads)
	pf := filepath.Join(dir, "policies.yaml")
	// Old: first (priority 1) allows. New: last (priority 1) denies. Mixed
	// (first new at priority 5, last old at 5): last denies with rule z-old.
	write(t, pf, bigPolicyFile(n, "old.example", 1, 5, "a-old", "z-old"))
	s := policy.NewStore()
	src := New(s, pf, wl, nil)
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	e := policy.NewEngine(s, policy.Options{})
	w := policy.WorkloadKey{Namespace: "x", Name: "a"}
	outcome := func() string {
		d := e.DecideLookup(w, "probe.example")
		return fmt.Sprintf("%s by %s#%s", d.Verdict, d.Policy.Name, d.Rule)
	}
	const before, after = "Allow by aaa-first#a-old", "Deny by zzz-last#z-new"
	if got := outcome(); got != before {
		t.Fatalf("before the reload: %s, want %s", got, before)
	}
	write(t, pf, bigPolicyFile(n, "new.example", 5, 1, "a-new", "z-new"))

	var done atomic.Bool
	var wg sync.WaitGroup
	seen := map[string]int{}
	var during int
	var slowest, firstNew time.Duration
	var over1ms int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			start := time.Now()
			o := outcome()
			took := time.Since(start)
			if seen[o]++; o == after && seen[o] == 1 {
				firstNew = took // the one that recomputes the workload's tiers
			}
			if took > time.Millisecond {
				over1ms++
			}
			slowest = max(slowest, took)
			during++
		}
	}()
	changed, err := src.Load()
	done.Store(true)
	wg.Wait()
	if err != nil || !changed {
		t.Fatalf("reload: changed=%v err=%v", changed, err)
	}
	// Timings are reported, not asserted (the machine is shared).
	t.Logf("%d lookups during the reload of %d policies: %d over 1 ms, slowest %v, first after the swap %v; outcomes %v", during, n+2, over1ms, slowest, firstNew, seen)
	for o := range seen {
		if o != before && o != after {
			t.Errorf("a lookup during the reload saw %q: a mix of old and new policies", o)
		}
	}
	if during == 0 {
		t.Error("no lookup was answered while the policies were reloaded")
	}
	if got := outcome(); got != after {
		t.Fatalf("after the reload: %s, want %s", got, after)
	}
	if got := len(s.Policies()); got != n+2 {
		t.Fatalf("%d policies after the reload, want %d", got, n+2)
	}
}

// TestOversizePolicyFileKeepsPolicies: a policy file beyond the size limit is
// refused with an error saying so, and the policies loaded from it before stay
// in force until it is valid again.
func TestOversizePolicyFileKeepsPolicies(t *testing.T) {
	pf, wl := testFiles(t, "policies.yaml", denyAll)
	s := policy.NewStore()
	src := New(s, pf, wl, nil)
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	pad := bytes.Repeat([]byte("# padding padding padding padding padding padding padding padding\n"), int(manifest.DefaultLimits.FileBytes)/64)
	write(t, pf, allowWeb+"---\n"+string(pad))
	_, err := src.Load()
	var tl *manifest.TooLargeError
	if !errors.As(err, &tl) || tl.What != "bytes" {
		t.Fatalf("oversize file: %v", err)
	}
	if h := src.Health(); h.OK || len(h.Problems) != 1 || h.Problems[0].Kind != ProblemTooLarge || h.Problems[0].Kept != 1 {
		t.Fatalf("health after the oversize file: %+v", h)
	}
	if v := verdict(s, 80); v != policy.Deny {
		t.Fatalf("after the oversize file: port 80 %s, want the previous deny-all in force", v)
	}
	// At start, with nothing good loaded yet, an oversize file is fatal.
	fresh := New(policy.NewStore(), pf, wl, nil)
	fresh.Load()
	if err := fresh.Unusable(); err == nil {
		t.Fatal("an agent would start on an oversize policy file")
	}
	if got := fmt.Sprint(s.Policies()); got != "[FirewallPolicy/x/deny-all]" {
		t.Fatalf("policies %s", got)
	}
	write(t, pf, allowWeb)
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if v := verdict(s, 80); v != policy.Allow {
		t.Fatalf("after the file is valid again: port 80 %s", v)
	}
}

// TestReloadBeyondTheStoreLimitChangesNothing: a reload that would leave the
// store with more policies than its limit is refused as a whole with a
// *PolicyLimitError; the policies in force stay, and a later reload within
// the limit applies.
func TestReloadBeyondTheStoreLimitChangesNothing(t *testing.T) {
	pol, wl := testPolicyDir(t)
	write(t, filepath.Join(pol, "a.yaml"), denyAll)
	s := policy.NewStore()
	s.SetPolicyLimit(2)
	src := New(s, pol, wl, nil)
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(pol, "b.yaml"), bigPolicyFile(1, "example", 1, 1, "a", "z"))
	_, err := src.Load()
	var le *policy.PolicyLimitError
	if !errors.As(err, &le) || le.Limit != 2 {
		t.Fatalf("reload to 4 policies at a limit of 2: %v", err)
	}
	if got := fmt.Sprint(s.Policies()); got != "[FirewallPolicy/x/deny-all]" {
		t.Fatalf("policies after the refused reload: %s", got)
	}
	write(t, filepath.Join(pol, "b.yaml"), allowWeb)
	if _, err := src.Load(); err != nil {
		t.Fatalf("reload within the limit: %v", err)
	}
	if got := fmt.Sprint(s.Policies()); got != "[FirewallPolicy/x/allow-web FirewallPolicy/x/deny-all]" {
		t.Fatalf("policies after the reload within the limit: %s", got)
	}
}

// TestOversizeWorkloadsFileKeepsWorkloads: a workloads file beyond the size
// limit is refused (too-large) without being read whole; the workloads stay.
func TestOversizeWorkloadsFileKeepsWorkloads(t *testing.T) {
	dir := t.TempDir()
	wl := filepath.Join(dir, "workloads.yaml")
	write(t, wl, workloads)
	s := policy.NewStore()
	src := New(s, "", wl, nil)
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	pad := bytes.Repeat([]byte("# padding padding padding padding padding padding padding padding\n"), int(manifest.DefaultLimits.FileBytes)/64)
	write(t, wl, workloads+string(pad))
	_, err := src.Load()
	var tl *manifest.TooLargeError
	if !errors.As(err, &tl) {
		t.Fatalf("oversize workloads file: %v", err)
	}
	if h := src.Health(); len(h.Problems) != 1 || h.Problems[0].Kind != ProblemTooLarge {
		t.Fatalf("health: %+v", h)
	}
	if got := len(s.Workloads()); got != 2 {
		t.Fatalf("%d workloads after the oversize file, want the 2 loaded before", got)
	}
}
