package file

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// loadOK loads and fails the test on a problem.
func loadOK(t *testing.T, src *Source) {
	t.Helper()
	if _, err := src.Load(); err != nil {
		t.Fatalf("load: %v", err)
	}
	if h := src.Health(); !h.OK {
		t.Fatalf("health after a good load: %+v", h)
	}
}

// loadBad loads, wants a problem of kind on file, and returns it.
func loadBad(t *testing.T, src *Source, file, kind string) Problem {
	t.Helper()
	if _, err := src.Load(); err == nil {
		t.Fatalf("load of a partial %s: no error", file)
	}
	h := src.Health()
	if h.OK || len(h.Problems) == 0 {
		t.Fatalf("health: %+v, want a problem", h)
	}
	for _, p := range h.Problems {
		if p.File == file && p.Kind == kind {
			if h.LastError == "" || h.Since.IsZero() {
				t.Errorf("health without lastError or since: %+v", h)
			}
			return p
		}
	}
	t.Fatalf("problems %+v: want %s on %s", h.Problems, kind, file)
	return Problem{}
}

// TestPartialPolicyFileKeepsLastGood: a policy file emptied, left with
// whitespace and comments, or cut mid-document (a document that does not
// parse, or whose last line lost its value) is a partial write: the deny it
// held stays in force, and comes back clean when the file is whole again.
func TestPartialPolicyFileKeepsLastGood(t *testing.T) {
	whole := denyAll + "---\n" + allowWeb81
	cuts := map[string]struct{ data, kind string }{
		"0 bytes":            {"", ProblemEmpty},
		"whitespace":         {"\n  \n\t\n", ProblemEmpty},
		"comments only":      {"# policies\n---\n# more\n", ProblemEmpty},
		"cut mid-line":       {whole[:len(whole)-12], ProblemUndecodable},
		"cut after a key":    {strings.TrimSuffix(whole, " [{cidr: 10.0.0.2/32}]\n    ports: [{port: 81}]\n"), ProblemUndecodable},
		"cut in first doc":   {denyAll[:40], ProblemUndecodable},
		"first doc, no spec": {"apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: deny-all, namespace: x}\nspec:\n", ProblemUndecodable},
	}
	for name, cut := range cuts {
		t.Run(name, func(t *testing.T) {
			pf, wl := testFiles(t, "policies.yaml", whole)
			s := policy.NewStore()
			src := New(s, pf, wl, nil)
			var failed []Problem
			loaded, recovered := 0, 0
			src.SetHooks(Hooks{
				Loaded:    func(bool) { loaded++ },
				Failed:    func(p Problem) { failed = append(failed, p) },
				Recovered: func() { recovered++ },
			})
			loadOK(t, src)
			if v := verdict(s, 80); v != policy.Deny {
				t.Fatalf("deny-all loaded: port 80 got %s", v)
			}
			if v := verdict(s, 81); v != policy.Allow {
				t.Fatalf("allow-81 loaded: port 81 got %s", v)
			}
			write(t, pf, cut.data)
			p := loadBad(t, src, pf, cut.kind)
			if p.NoLastGood || p.Kept != 2 {
				t.Errorf("problem %+v: want its 2 policies kept", p)
			}
			if v := verdict(s, 80); v != policy.Deny {
				t.Fatalf("after the partial write: port 80 got %s, the deny must stay", v)
			}
			if n := len(s.Policies()); n != 2 {
				t.Fatalf("after the partial write: %d policies in the store, want 2", n)
			}
			if src.Unusable() != nil {
				t.Errorf("Unusable with last good content in force: %v", src.Unusable())
			}
			// Polls that find the same problem report it once.
			write(t, pf, cut.data)
			_, _ = src.Load()
			if len(failed) != 1 {
				t.Errorf("Failed called %d times for one problem, want 1: %+v", len(failed), failed)
			}
			write(t, pf, whole)
			loadOK(t, src)
			if recovered != 1 || loaded != 4 {
				t.Errorf("recovered %d (want 1), loaded %d (want 4)", recovered, loaded)
			}
			if v := verdict(s, 81); v != policy.Allow {
				t.Fatalf("restored: port 81 got %s", v)
			}
		})
	}
}

const allowWeb81 = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-81, namespace: x}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{cidr: 10.0.0.2/32}]
    ports: [{port: 81}]
`

// TestRemovedPolicyFileDeletesItsPolicies: removing the file is how an
// operator removes its policies, in a directory and as the --policies file.
func TestRemovedPolicyFileDeletesItsPolicies(t *testing.T) {
	pol, wl := testPolicyDir(t)
	deny, web := filepath.Join(pol, "deny.yaml"), filepath.Join(pol, "web.yaml")
	write(t, deny, denyAll)
	write(t, web, allowWeb)
	s := policy.NewStore()
	src := New(s, pol, wl, nil)
	loadOK(t, src)
	// One file emptied, the other removed: the emptied one stays, the removed one goes.
	write(t, deny, "")
	if err := os.Remove(web); err != nil {
		t.Fatal(err)
	}
	loadBad(t, src, deny, ProblemEmpty)
	if got := refs(s); got != "FirewallPolicy/x/deny-all" {
		t.Fatalf("policies %q, want only deny-all", got)
	}
	if err := os.Remove(deny); err != nil {
		t.Fatal(err)
	}
	loadOK(t, src)
	if got := refs(s); got != "" {
		t.Fatalf("policies %q after removing every file, want none", got)
	}

	// A single --policies file removed.
	pf := filepath.Join(filepath.Dir(pol), "one.yaml")
	write(t, pf, denyAll)
	s = policy.NewStore()
	src = New(s, pf, wl, nil)
	loadOK(t, src)
	if err := os.Remove(pf); err != nil {
		t.Fatal(err)
	}
	loadOK(t, src)
	if v := verdict(s, 80); v != policy.Allow {
		t.Fatalf("policy file removed: port 80 got %s, want the default", v)
	}
}

func refs(s *policy.Store) string {
	var out []string
	for _, p := range s.Policies() {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}

// TestPartialWorkloadsFileKeepsLastGood: the workloads file emptied or cut
// keeps the workloads in force (a pod's policy keeps applying to it); removed,
// every workload goes.
func TestPartialWorkloadsFileKeepsLastGood(t *testing.T) {
	cuts := map[string]struct{ data, kind string }{
		"0 bytes":        {"", ProblemEmpty},
		"comments only":  {"# nothing yet\n", ProblemEmpty},
		"cut mid-line":   {workloads[:len(workloads)-8], ProblemUndecodable},
		"cut after key":  {"namespaces: [{name: x}]\npods:\n- namespace: x\n  name: a\n  ips:\n", ProblemUndecodable},
		"cut mid-entry":  {"namespaces: [{name: x}]\npods:\n- {namespace: x, name: a, ips: [10.0.0.1]}\n- namespace: x\n", ProblemInvalid},
		"empty document": {"{}\n", ProblemEmpty},
	}
	for name, cut := range cuts {
		t.Run(name, func(t *testing.T) {
			pf, wl := testFiles(t, "deny.yaml", denyAll)
			s := policy.NewStore()
			src := New(s, pf, wl, nil)
			loadOK(t, src)
			write(t, wl, cut.data)
			p := loadBad(t, src, wl, cut.kind)
			if p.NoLastGood {
				t.Errorf("problem %+v: the last good workloads are in force", p)
			}
			if v := verdict(s, 80); v != policy.Deny {
				t.Fatalf("after the partial write: got %s, pods a and b must stay known and restricted", v)
			}
			if n := len(s.Workloads()); n != 2 {
				t.Fatalf("%d workloads, want 2", n)
			}
			write(t, wl, workloads)
			loadOK(t, src)
			if err := os.Remove(wl); err != nil {
				t.Fatal(err)
			}
			loadOK(t, src)
			if n := len(s.Workloads()); n != 0 {
				t.Fatalf("workloads file removed: %d workloads, want 0", n)
			}
		})
	}
}

// TestStartWithoutLastGoodIsUnusable: at the first load an empty, cut or
// missing file has no last good content: Unusable names it (the agent does
// not start on it). An invalid object alone does not make a file unusable.
func TestStartWithoutLastGoodIsUnusable(t *testing.T) {
	dir := t.TempDir()
	wl := filepath.Join(dir, "workloads.yaml")
	write(t, wl, workloads)
	pf := filepath.Join(dir, "p.yaml")
	for _, tc := range []struct {
		name, data string
		unusable   bool
	}{
		{"0 bytes", "", true},
		{"cut", denyAll[:50], true},
		{"invalid object", strings.Replace(allowWeb, "ports: [{port: 80}]", "to: [{cidr: 10.0.0.2/33}]", 1), false},
		{"valid", denyAll, false},
	} {
		write(t, pf, tc.data)
		src := New(policy.NewStore(), pf, wl, nil)
		_, _ = src.Load()
		if err := src.Unusable(); (err != nil) != tc.unusable {
			t.Errorf("%s: Unusable() = %v, want unusable %v", tc.name, err, tc.unusable)
		}
	}
	src := New(policy.NewStore(), filepath.Join(dir, "missing.yaml"), wl, nil)
	_, _ = src.Load()
	if err := src.Unusable(); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing policy file at start: Unusable() = %v", err)
	}
	write(t, wl, "")
	src = New(policy.NewStore(), pf, wl, nil)
	_, _ = src.Load()
	if err := src.Unusable(); err == nil || !strings.Contains(err.Error(), "workloads.yaml") {
		t.Errorf("empty workloads file at start: Unusable() = %v", err)
	}
}

// TestProblemMessageIsClipped: a huge value in a broken file is not echoed whole.
func TestProblemMessageIsClipped(t *testing.T) {
	p := Problem{File: "f.yaml", Kind: ProblemInvalid, Err: errors.New(strings.Repeat("x", 100_000))}
	if n := len(p.Message()); n > 300 {
		t.Fatalf("message of %d bytes", n)
	}
	if !errors.Is(manifest.CutShort([]byte("a:\n  b:\n")), manifest.ErrCutShort) {
		t.Fatal("CutShort: a trailing key without a value")
	}
}

// TestUnchangedFilesDoNotChangeTheStore: a reload that finds the same
// namespaces, pods and policies (a file touched, another one cut) changes
// nothing: no sync, no re-render of the kernel table.
func TestUnchangedFilesDoNotChangeTheStore(t *testing.T) {
	pf, wl := testFiles(t, "deny.yaml", denyAll)
	s := policy.NewStore()
	src := New(s, pf, wl, nil)
	loadOK(t, src)
	gen := s.Generation()
	write(t, wl, workloads) // same content, new mtime
	if changed, err := src.Load(); changed || err != nil {
		t.Fatalf("same files: changed=%v err=%v", changed, err)
	}
	write(t, pf, "")
	if changed, _ := src.Load(); changed {
		t.Fatal("an emptied policy file changed the store")
	}
	if g := s.Generation(); g != gen {
		t.Fatalf("store generation %d → %d", gen, g)
	}
}

// TestUnreadableFileCountedOnce: a file that cannot be read (a dangling
// symlink in the policy directory) is one problem, loaded and counted once,
// not once per poll; its removal clears it.
func TestUnreadableFileCountedOnce(t *testing.T) {
	pol, wl := testPolicyDir(t)
	write(t, filepath.Join(pol, "deny.yaml"), denyAll)
	s := policy.NewStore()
	src := New(s, pol, wl, nil)
	loads := 0
	src.SetHooks(Hooks{Loaded: func(bool) { loads++ }})
	loadOK(t, src)
	link := filepath.Join(pol, "gone.yaml")
	if err := os.Symlink(filepath.Join(filepath.Dir(pol), "nowhere.yaml"), link); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		loadBad(t, src, link, ProblemUnreadable)
	}
	if loads != 2 {
		t.Fatalf("%d loads for one unchanged problem, want 2 (the good one and the first bad one)", loads)
	}
	if v := verdict(s, 80); v != policy.Deny {
		t.Fatalf("deny-all: got %s", v)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	loadOK(t, src)
}

// TestStartBeyondTheLimitsIsUnusable: a policy source refused whole for its
// size at the first load leaves nothing in force: the agent must not start on
// it (an invalid object alone would not stop it).
func TestStartBeyondTheLimitsIsUnusable(t *testing.T) {
	pf, wl := testFiles(t, "p.yaml", denyAll+"---\n"+allowWeb)
	s := policy.NewStore()
	s.SetPolicyLimit(1)
	src := New(s, pf, wl, nil)
	_, _ = src.Load()
	if len(s.Policies()) != 0 {
		t.Fatalf("policies in force: %v", s.Policies())
	}
	err := src.Unusable()
	if err == nil || !strings.Contains(err.Error(), ProblemTooLarge) {
		t.Fatalf("Unusable() = %v, want the too-large source named", err)
	}
}
