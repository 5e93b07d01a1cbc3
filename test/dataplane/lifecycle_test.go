package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/scenarios"
)

// TestMain checks that the tests leave the host namespace's ruleset as they
// found it (read-only: nft list ruleset in the host namespace).
func TestMain(m *testing.M) {
	check := os.Geteuid() == 0
	if _, err := exec.LookPath("nft"); err != nil {
		check = false
	}
	var before string
	if check {
		before = nftHost()
	}
	code := m.Run()
	if check {
		if after := nftHost(); after != before {
			fmt.Fprintf(os.Stderr, "host namespace ruleset changed by the tests:\nbefore:\n%s\nafter:\n%s\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

const ingressYA = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-xa, namespace: "y"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - action: Allow
    from:
    - pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}
    ports: [%s]
`

const fqdnXA = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: fqdn, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress:
  - action: Allow
    to: [{fqdn: {matchName: z-b.example.com}}]
`

func portsYAML(ports ...int) string {
	var s []string
	for _, p := range ports {
		s = append(s, fmt.Sprintf("{port: %d}", p))
	}
	return strings.Join(s, ", ")
}

// TestRevocation: a live TCP connection dies when the rule that allowed it is
// removed; another connection that stays allowed keeps working.
func TestRevocation(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s, err := newSession(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	apply := func(policies ...string) {
		t.Helper()
		plan, ch, eng, err := s.load(&scenarios.Scenario{Name: "revocation", Policies: policies})
		if err != nil {
			t.Fatal(err)
		}
		h.eng = eng
		if err := h.enf.Apply(ctx, plan, ch); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	apply(fmt.Sprintf(ingressYA, portsYAML(80, 81)))
	xa, ya, xb := h.byName["x/a"], h.byName["y/a"], h.byName["x/b"]
	c80, err := h.pr.OpenConn(ctx, xa, ya.IPv4, 80)
	if err != nil {
		t.Fatalf("open :80: %v", err)
	}
	defer c80.Close()
	c81, err := h.pr.OpenConn(ctx, xa, ya.IPv4, 81)
	if err != nil {
		t.Fatalf("open :81: %v", err)
	}
	defer c81.Close()
	if ok, _ := h.pr.Probe(ctx, xb, ya.IPv4, 80, netmodel.TCP, 0); ok {
		t.Fatalf("x/b reaches y/a:80 although only x/a is allowed\n%s", h.ruleset())
	}
	if !c80.Alive(time.Second) || !c81.Alive(time.Second) {
		t.Fatal("connections not alive before the change")
	}
	apply(fmt.Sprintf(ingressYA, portsYAML(81)))
	if c80.Alive(500 * time.Millisecond) {
		t.Errorf("connection to :80 survived the revocation\n%s", h.ruleset())
	}
	if !c81.Alive(time.Second) {
		t.Errorf("connection to :81 (still allowed) died")
	}
}

var expiresRE = regexp.MustCompile(` expires [0-9hms.]+`)

// TestRestart: a second Enforcer adopts the table of the first in one
// transaction: FQDN set elements keep their timeouts, a live connection
// survives, a prober running during the restart never sees denied traffic pass
// and allowed traffic keeps working afterwards; the resulting ruleset is the
// same.
func TestRestart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s, err := newSession(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	zb := h.byName["z/b"]
	sc := scenarios.Scenario{Name: "restart",
		Policies: []string{fmt.Sprintf(ingressYA, portsYAML(80)), fqdnXA},
		Lookups:  []scenarios.Lookup{{Workload: "x/a", Name: "z-b.example.com", IPs: []netip.Addr{zb.IPv4}}},
	}
	plan, ch, eng, err := s.load(&sc)
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	if err := h.enf.Apply(ctx, plan, ch); err != nil {
		t.Fatal(err)
	}
	if err := h.writeLookups(ctx, eng, plan, sc.Lookups); err != nil {
		t.Fatal(err)
	}
	xa, xb, ya := h.byName["x/a"], h.byName["x/b"], h.byName["y/a"]
	if !h.check(ctx, t, "before restart", eng, plan, nil, scenarios.IPv4) {
		t.FailNow()
	}
	var fqSet string
	for _, pp := range plan.Policies {
		for _, r := range pp.Egress {
			if r.FQDN {
				fqSet = egress.FQDNSetName(r.ID, ipset.IPv4)
			}
		}
	}
	elemsBefore, err := h.sets.List(ctx, fqSet)
	if err != nil || len(elemsBefore) != 1 {
		t.Fatalf("fqdn set %s: %v %v", fqSet, elemsBefore, err)
	}
	live, err := h.pr.OpenConn(ctx, xa, zb.IPv4, 80) // allowed through the FQDN set
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer live.Close()
	before, _ := h.node.Exec(ctx, "", "nft", "-s", "list", "table", "inet", "egressd")

	// Probe denied and allowed cells continuously during the restart.
	var leaked, allowedOK atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	quick := &netmodel.Prober{Timeout: 150 * time.Millisecond}
	denied := []struct {
		from *netmodel.Pod
		port int
	}{{xb, 80}, {xa, 81}}
	for _, d := range denied {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if ok, _ := quick.Probe(ctx, d.from, ya.IPv4, d.port, netmodel.TCP, 0); ok {
					leaked.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ok, _ := quick.Probe(ctx, xa, zb.IPv4, 80, netmodel.TCP, 0); ok {
				allowedOK.Add(1)
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)

	// Restart: the old enforcer goes away (kernel state stays), a new one adopts.
	if err := h.enf.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := h.newEnforcer(egress.WithRevocation(h.decide))
	h.enf = e2
	plan2, _ := policy.NewCompiler(s.store, s.opts).Compile() // a fresh agent compiles anew
	for i := 0; i < 3; i++ {
		if err := e2.Apply(ctx, plan2, policy.Changes{Full: true}); err != nil {
			t.Fatalf("adopt: %v", err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := leaked.Load(); n > 0 {
		t.Errorf("%d denied probes passed during the restart", n)
	}
	if allowedOK.Load() == 0 {
		t.Errorf("no allowed probe succeeded during the restart")
	}
	if !live.Alive(time.Second) {
		t.Errorf("live connection died in the restart")
	}
	elemsAfter, err := h.sets.List(ctx, fqSet)
	if err != nil || len(elemsAfter) != 1 || elemsAfter[0].Timeout <= 0 || elemsAfter[0].Timeout > elemsBefore[0].Timeout {
		t.Errorf("fqdn set after restart: %v %v (before %v)", elemsAfter, err, elemsBefore)
	}
	after, _ := h.node.Exec(ctx, "", "nft", "-s", "list", "table", "inet", "egressd")
	if a, b := expiresRE.ReplaceAllString(string(after), ""), expiresRE.ReplaceAllString(string(before), ""); a != b {
		t.Errorf("ruleset differs after adoption:\nbefore:\n%s\nafter:\n%s", b, a)
	}
	h.check(ctx, t, "after restart", eng, plan2, nil, scenarios.IPv4)
}

// TestHygiene: the enforcer touches nothing outside its table in the node
// namespace, Remove restores the node's ruleset exactly, and the host
// namespace's ruleset is unchanged (read-only comparison).
func TestHygiene(t *testing.T) {
	hostBefore := nftHost()
	h := newHarness(t)
	ctx := context.Background()
	// A foreign table in the node namespace must survive untouched.
	if out, err := h.node.Exec(ctx, "table inet other {\n chain c {\n  type filter hook forward priority -5; policy accept;\n  counter\n }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatalf("nft -f: %v %s", err, out)
	}
	nodeBefore := h.ruleset()
	s, err := newSession(policy.Options{DefaultVerdict: policy.Deny})
	if err != nil {
		t.Fatal(err)
	}
	plan, ch, eng, err := s.load(&scenarios.Scenario{Name: "hygiene", Policies: []string{fmt.Sprintf(ingressYA, portsYAML(80)), fqdnXA}})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	if err := h.enf.Apply(ctx, plan, ch); err != nil {
		t.Fatal(err)
	}
	out, err := h.node.Exec(ctx, "", "nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "table inet other\ntable inet egressd" {
		t.Errorf("tables in the node namespace: %q", got)
	}
	if err := h.enf.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if after := h.ruleset(); after != nodeBefore {
		t.Errorf("node ruleset after Remove:\n%s\nwant:\n%s", after, nodeBefore)
	}
	if err := h.enf.Remove(ctx); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if hostAfter := nftHost(); hostAfter != hostBefore {
		t.Errorf("host ruleset changed:\nbefore:\n%s\nafter:\n%s", hostBefore, hostAfter)
	}
}
