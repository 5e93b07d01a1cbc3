package file

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

const denyAll = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  egress: []
`

const allowWeb = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-web, namespace: x}
spec:
  podSelector: {}
  egress:
  - action: Allow
    ports: [{port: 80}]
`

const workloads = `namespaces: [{name: x}]
pods:
- {namespace: x, name: a, ips: [10.0.0.1]}
- {namespace: x, name: b, ips: [10.0.0.2]}
`

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	// Make sure the fingerprint sees a new modification time.
	now := time.Now().Add(time.Duration(len(data)) * time.Millisecond)
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
}

// testFiles writes the test workloads, and policies into the file name, in a
// new temporary directory and returns the two paths.
func testFiles(t *testing.T, name, policies string) (pf, wl string) {
	t.Helper()
	dir := t.TempDir()
	wl = filepath.Join(dir, "workloads.yaml")
	write(t, wl, workloads)
	pf = filepath.Join(dir, name)
	write(t, pf, policies)
	return pf, wl
}

// testPolicyDir writes the test workloads and makes an empty policy
// directory in a new temporary directory; it returns the two paths.
func testPolicyDir(t *testing.T) (pol, wl string) {
	t.Helper()
	dir := t.TempDir()
	wl = filepath.Join(dir, "workloads.yaml")
	write(t, wl, workloads)
	pol = filepath.Join(dir, "policies")
	if err := os.Mkdir(pol, 0o755); err != nil {
		t.Fatal(err)
	}
	return pol, wl
}

func verdict(s *policy.Store, port int32) policy.Verdict {
	e := policy.NewEngine(s, policy.Options{})
	return e.Decide(policy.Connection{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Port: port, Protocol: policy.ProtocolTCP}).Verdict
}

func TestReloadAppliesAddsChangesAndDeletes(t *testing.T) {
	pol, wl := testPolicyDir(t)
	write(t, filepath.Join(pol, "deny.yaml"), denyAll)
	s := policy.NewStore()
	src := New(s, pol, wl, nil)
	if changed, err := src.Load(); err != nil || !changed {
		t.Fatalf("first load: changed=%v err=%v", changed, err)
	}
	if v := verdict(s, 80); v != policy.Deny {
		t.Fatalf("deny-all loaded: got %s", v)
	}
	if changed, _ := src.Load(); changed {
		t.Fatal("unchanged files reported a change")
	}
	write(t, filepath.Join(pol, "web.yaml"), allowWeb)
	if changed, err := src.Load(); err != nil || !changed {
		t.Fatalf("add: changed=%v err=%v", changed, err)
	}
	if v := verdict(s, 80); v != policy.Allow {
		t.Fatalf("allow-web added: got %s", v)
	}
	if err := os.Remove(filepath.Join(pol, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if changed, err := src.Load(); err != nil || !changed {
		t.Fatalf("delete: changed=%v err=%v", changed, err)
	}
	if v := verdict(s, 80); v != policy.Deny {
		t.Fatalf("allow-web deleted: got %s", v)
	}
}

func TestInvalidUpdateKeepsPreviousVersion(t *testing.T) {
	pf, wl := testFiles(t, "web.yaml", allowWeb+"  - action: Deny\n    to: [{cidr: 10.0.0.2/32}]\n    ports: [{port: 81}]\n")
	s := policy.NewStore()
	src := New(s, pf, wl, nil)
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if v := verdict(s, 81); v != policy.Deny {
		t.Fatalf("initial: port 81 got %s", v)
	}
	// Break the policy: the bad CIDR is rejected with its field, the old version stays.
	write(t, pf, strings.Replace(allowWeb, "ports: [{port: 80}]", "to: [{cidr: 10.0.0.2/33}]", 1))
	_, err := src.Load()
	if err == nil || !strings.Contains(err.Error(), "spec.egress[0].to[0].cidr") {
		t.Fatalf("want an error naming spec.egress[0].to[0].cidr, got %v", err)
	}
	if v := verdict(s, 81); v != policy.Deny {
		t.Fatalf("after invalid update: port 81 got %s, previous version must stay", v)
	}
	if len(src.Errors()) == 0 {
		t.Fatal("Errors() must report the invalid policy")
	}
}

func TestUndecodableFileDeletesNothing(t *testing.T) {
	pf, wl := testFiles(t, "deny.yaml", denyAll)
	s := policy.NewStore()
	src := New(s, pf, wl, nil)
	if _, err := src.Load(); err != nil {
		t.Fatal(err)
	}
	write(t, pf, "{{{ not yaml")
	if _, err := src.Load(); err == nil {
		t.Fatal("garbage must be an error")
	}
	if v := verdict(s, 80); v != policy.Deny {
		t.Fatalf("a broken file must not delete its policies: got %s", v)
	}
}
