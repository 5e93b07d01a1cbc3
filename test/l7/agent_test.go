package l7

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/coredns"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

// TestAgentTransparentProxy runs the real egressd binary in the node with
// --transparent-proxy on an IPv4 and an IPv6 address and --http-proxy, CoreDNS
// as its upstream: the agent redirects the client pod's IPv4 and IPv6
// connections; good.test and other.test (one address per family, allowed by
// two policies) pass, evil.test does not; blocked requests and Audit
// would-blocks are audit-log lines; the verdicts are counted in /metrics.
// alias.test, allowed by name, is a CNAME to pool.minepool.test, which an
// Admin policy denies: the proxy decides the chain as the resolver does and
// refuses it over transparent TLS and CONNECT (chain-denied, cname in the
// audit line).
func TestAgentTransparentProxy(t *testing.T) {
	testenv.SkipShort(t, "end-to-end test with the agent binary")
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "curl", "ip", "nft")
	dir := t.TempDir()
	bin := testenv.GoBuild(t, "github.com/egressd/egressd/cmd/egressd")
	corednsBin := coredns.Binary(t)

	e := &env{t: t}
	e.node = netmodel.NewTestNode(t, netmodel.Options{Ports: []int{81}})
	pods, err := e.node.AddPods("apps/client")
	if err != nil {
		t.Fatal(err)
	}
	e.client = pods[0]
	if e.ext, err = e.node.AddExternal(netmodel.ExternalSpec{Ports: []int{81}}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"addr", "add", proxyIP.String() + "/32", "dev", "lo"},
		{"-6", "addr", "add", proxyIP6.String() + "/128", "dev", "lo", "nodad"},
	} {
		if out, err := e.node.Exec(context.Background(), "", "ip", args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	cert, caPath := testCA(t, dir, "good.test", "other.test", "evil.test", "alias.test")
	e.caPath = caPath
	e.serve(e.ext, cert)

	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var zone strings.Builder
	zone.WriteString("$ORIGIN .\n@ 3600 IN SOA ns.test. admin.test. 1 7200 3600 1209600 30\n@ 3600 IN NS ns.test.\nns.test. 60 IN A 127.0.0.1\n")
	for _, n := range []string{"good.test", "other.test", "evil.test", "pool.minepool.test"} {
		fmt.Fprintf(&zone, "%s. 60 IN A %s\n%s. 60 IN AAAA %s\n", n, e.ext.IPv4, n, e.ext.IPv6)
	}
	zone.WriteString("alias.test. 60 IN CNAME pool.minepool.test.\n")
	db := write("db.root", zone.String())
	cf := write("Corefile", fmt.Sprintf(".:5300 {\n  bind 127.0.0.1\n  file %s .\n}\n", db))
	coreDNS := start(t, e.node, "coredns", corednsBin, "-conf", cf)
	// CoreDNS answers before the agent starts: the proxy's first lookups
	// would otherwise race its start (SERVFAIL, resolve-failed).
	for i := 0; ; i++ {
		m := new(dns.Msg)
		m.SetQuestion("good.test.", dns.TypeA)
		var r *dns.Msg
		_ = e.node.Do(func() error {
			r, _, _ = (&dns.Client{Timeout: 200 * time.Millisecond}).Exchange(m, "127.0.0.1:5300")
			return nil
		})
		if r != nil && r.Rcode == dns.RcodeSuccess {
			break
		}
		if i == 100 {
			t.Fatalf("CoreDNS does not answer:\n%s", coreDNS.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	audit := filepath.Join(dir, "audit.jsonl")
	agent := start(t, e.node, "egressd", bin,
		"--policies", write("policies.yaml", policyYAML+chainPolicyYAML),
		"--workloads", write("workloads.yaml", fmt.Sprintf("namespaces:\n- {name: apps}\npods:\n- {namespace: apps, name: client, ips: [%s, %q]}\n", e.client.IPv4, e.client.IPv6)),
		"--listen", proxyIP.String()+":53", "--upstream", "127.0.0.1:5300", "--state-file", "",
		"--audit-log", audit, "--http-addr", "127.0.0.1:9464",
		"--http-proxy", explicit.String(),
		"--transparent-proxy", "--transparent-proxy-addr", transparent.String()+","+transparent6.String(),
		"--proxy-redirect-refresh", "200ms")
	hc := netmodel.HTTPClient(e.node.NS, 2*time.Second)
	get := func(path string) string {
		resp, err := hc.Get("http://127.0.0.1:9464" + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return ""
		}
		return string(b)
	}
	// Ready, with the redirect for both families in the kernel.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := e.node.Exec(context.Background(), "", "nft", "list", "chain", "inet", "egressd", "l7_redirect")
		if get("/readyz") != "" && strings.Contains(string(out), "dnat ip6 to [fd00::a9fe:140a]:15001") && strings.Contains(string(out), "dnat ip to 169.254.20.10:15001") {
			break
		}
		select {
		case <-agent.exited:
			t.Fatalf("egressd exited:\n%s", agent.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready or redirect not installed:\n%s\n%s", out, agent.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	sets, _ := e.node.Exec(context.Background(), "", "nft", "list", "set", "inet", "egressd", "l7_src_v6")
	if !strings.Contains(string(sets), e.client.IPv6.String()) {
		t.Fatalf("l7_src_v6 lacks the client's IPv6 address:\n%s", sets)
	}

	for _, fam := range []struct{ flag, ip string }{{"-4", e.ext.IPv4.String()}, {"-6", "[" + e.ext.IPv6.String() + "]"}} {
		for _, name := range []string{"other.test", "good.test"} {
			if out, code := e.curl(fam.flag, "--resolve", name+":443:"+fam.ip, "https://"+name+"/"); code != 0 || !strings.Contains(out, "external via "+name) {
				t.Errorf("%s %s: %d %q", fam.flag, name, code, out)
			}
		}
		if out, code := e.curl(fam.flag, "--resolve", "evil.test:443:"+fam.ip, "https://evil.test/"); code == 0 {
			t.Errorf("%s evil.test passed: %q", fam.flag, out)
		}
	}
	if out, code := e.curl("--proxy", "http://"+explicit.String(), "https://good.test/"); code != 0 || !strings.Contains(out, "external via good.test") {
		t.Errorf("explicit good.test: %d %q", code, out)
	}
	// The CNAME into the denied pool, transparent and explicit.
	if out, code := e.curl("-4", "--resolve", "alias.test:443:"+e.ext.IPv4.String(), "https://alias.test/"); code == 0 {
		t.Errorf("transparent alias.test (CNAME into a denied name) passed: %q", out)
	}
	if out, code := e.curl("--proxy", "http://"+explicit.String(), "https://alias.test/"); code == 0 {
		t.Errorf("CONNECT alias.test (CNAME into a denied name) passed: %q", out)
	}

	// Audit lines: evil.test blocked per family, other.test would-blocks.
	type line struct {
		Event, QName, Reason, Policy, Client, Response, CNAME string
		Attrs                                                 map[string]string
	}
	var lines []line
	deadline = time.Now().Add(10 * time.Second)
	for {
		lines = lines[:0]
		if f, err := os.Open(audit); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var l line
				if json.Unmarshal(sc.Bytes(), &l) == nil && strings.HasPrefix(l.Event, "http.egress.") {
					lines = append(lines, l)
				}
			}
			f.Close()
		}
		if len(lines) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	count := map[string]int{}
	for _, l := range lines {
		switch {
		case l.Event == "http.egress.blocked" && l.QName == "evil.test" && l.Reason == "address-of-other-name" && l.Response == "reset":
			count["blocked "+l.Attrs["destination.address"]]++
		case l.Event == "http.egress.audit" && l.QName == "other.test" && l.Policy == "FirewallPolicy/apps/staged" && l.Reason == "name-denied":
			count["audit "+l.Client]++
		case l.Event == "http.egress.blocked" && l.QName == "alias.test" && l.Reason == "chain-denied" && l.CNAME == "pool.minepool.test" && l.Policy == "ClusterFirewallPolicy/deny-mining":
			count["chain "+l.Attrs["egressd.l7.mode"]]++
		default:
			t.Errorf("unexpected line %+v", l)
		}
	}
	for _, k := range []string{"blocked " + e.ext.IPv4.String(), "blocked " + e.ext.IPv6.String(), "audit " + e.client.IPv4.String(), "audit " + e.client.IPv6.String(), "chain transparent-tls", "chain connect"} {
		if count[k] != 1 {
			t.Errorf("%q: %d lines, want 1 (%+v)", k, count[k], lines)
		}
	}
	metrics := get("/metrics")
	for _, want := range []string{
		`egressd_l7_requests_total{mode="transparent-tls",reason="",verdict="allowed"} 4`,
		`egressd_l7_requests_total{mode="transparent-tls",reason="address-of-other-name",verdict="blocked"} 2`,
		`egressd_l7_requests_total{mode="connect",reason="",verdict="allowed"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "egressd_l7_"))
		}
	}
	if t.Failed() {
		t.Logf("egressd output:\n%s", agent.out.String())
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

type proc struct {
	cmd    *exec.Cmd
	out    *testenv.SyncBuffer
	exited chan struct{}
}

// start runs a program in the node namespace until the test ends.
func start(t *testing.T, node *netmodel.Node, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &testenv.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := node.Do(p.cmd.Start); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// chainPolicyYAML: the pod may reach alias.test by name; an Admin policy
// denies *.minepool.test, where alias.test's CNAME leads.
const chainPolicyYAML = `---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: alias, namespace: apps}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{fqdn: {matchName: alias.test}}]
    ports: [{port: 443}]
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {}}
  egress:
  - name: mining-pools
    action: Deny
    to: [{fqdn: {matchPattern: "*.minepool.test"}}]
`
