package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/test/coredns"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

const (
	// resolverIP is the node-local resolver address (on the node's lo).
	resolverIP   = "169.254.20.10"
	resolverAddr = resolverIP + ":53"
	// upstreamAddr is the CoreDNS authoritative server inside the node.
	upstreamAddr = "127.0.0.1:5300"
	// silentAddr is a UDP/TCP socket in the node that reads queries and never answers.
	silentAddr = "127.0.0.1:5399"
)

// Addresses served by the external peer: its own (192.0.2.10, 2001:db8::10) and two
// /16s routed to it and local there (AnyIP), so that every answer of the race zone is
// a distinct reachable address.
var (
	extV4      = netip.MustParseAddr("192.0.2.10")
	extV6      = netip.MustParseAddr("2001:db8::10")
	cdnEdge    = netip.MustParseAddr("10.98.0.1")  // final A of the CNAME chain
	neverAsked = netip.MustParseAddr("10.98.0.99") // never in any answer
	raceNet    = netip.MustParsePrefix("10.99.0.0/16")
	cdnNet     = netip.MustParsePrefix("10.98.0.0/16")
)

const zone = `$ORIGIN .
@ 3600 IN SOA ns.example.com. admin.example.com. 1 7200 3600 1209600 30
@ 3600 IN NS ns.example.com.
ns.example.com. 60 IN A 127.0.0.1
api.example.com. 60 IN A 192.0.2.10
api.example.com. 60 IN AAAA 2001:db8::10
evil.example.com. 60 IN A 192.0.2.10
wild.example.com. 60 IN A 192.0.2.10
x.wild.example.com. 60 IN A 192.0.2.10
a.b.wild.example.com. 60 IN A 192.0.2.10
deep.example.com. 60 IN A 192.0.2.10
c.deep.example.com. 60 IN A 192.0.2.10
a.b.c.deep.example.com. 60 IN A 192.0.2.10
alias.example.com. 60 IN CNAME mid.example.net.
mid.example.net. 60 IN CNAME edge.example.net.
edge.example.net. 60 IN A 10.98.0.1
pool.minepool.com. 60 IN A 192.0.2.10
`

const policies = `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaceSelector: {}
  egress:
  - name: mining-pools
    action: Deny
    to:
    - fqdn: {matchPattern: "*.minepool.com"}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: egress-allow, namespace: builds}
spec:
  podSelector: {}
  egress:
  - name: names
    action: Allow
    to:
    - fqdn: {matchName: api.example.com}
    - fqdn: {matchPattern: "*.wild.example.com"}
    - fqdn: {matchPattern: "**.deep.example.com"}
    - fqdn: {matchName: alias.example.com}
    - fqdn: {matchPattern: "*.race.example.com"}
    - fqdn: {matchPattern: "*.big.example.com"}
    ports: [{port: 80, protocol: TCP}]
`

// bigCount is the number of A records of each name of big.example.com: more
// than fit in 512 bytes, fewer than in 1232.
const bigCount = 40

// bigZone is big.example.com: many and more, bigCount A records each
// (10.98.1.x and 10.98.2.x, reachable at the external peer). Its server block
// caps the EDNS0 buffer of every query at 512 (bufsize), so that its UDP
// answers to egressd come back truncated.
func bigZone() string {
	var b strings.Builder
	b.WriteString("$ORIGIN big.example.com.\n@ 3600 IN SOA ns.example.com. admin.example.com. 1 7200 3600 1209600 30\n@ 3600 IN NS ns.example.com.\n")
	for _, n := range []struct {
		name string
		net  int
	}{{"many", 1}, {"more", 2}} {
		for i := 1; i <= bigCount; i++ {
			fmt.Fprintf(&b, "%s 60 IN A 10.98.%d.%d\n", n.name, n.net, i)
		}
	}
	return b.String()
}

// world is one node with a restricted pod (builds/runner-0), the external peer, the
// upstream (CoreDNS) and a silent upstream inside the node.
type world struct {
	t    *testing.T
	dir  string
	node *netmodel.Node
	pod  *netmodel.Pod
	ext  *netmodel.Pod
	pr   *netmodel.Prober
	// coredns is the upstream (its output has the queries of big.example.com).
	coredns *proc
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuilds()
	os.Exit(code)
}

// requireE2E checks root and tools.
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("testing.Short(): end-to-end test in network namespaces")
	}
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft", "dig")
}

// agentBinary builds cmd/egressd once per test process.
func agentBinary(t *testing.T) string {
	return testenv.GoBuild(t, "github.com/egressd/egressd/cmd/egressd")
}

func newWorld(t *testing.T) *world {
	t.Helper()
	requireE2E(t)
	agentBinary(t)
	w := &world{t: t, dir: t.TempDir(), pr: &netmodel.Prober{Timeout: 2 * time.Second}}
	w.node = netmodel.NewTestNode(t, netmodel.Options{})
	pods, err := w.node.AddPodSpecs(netmodel.PodSpec{Name: "builds/runner-0"})
	if err != nil {
		t.Fatal(err)
	}
	w.pod = pods[0]
	if w.ext, err = w.node.AddExternal(netmodel.ExternalSpec{}); err != nil {
		t.Fatal(err)
	}
	// The node-local resolver address on the node's lo.
	nl := w.node.Netlink()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(resolverIP), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	// raceNet and cdnNet: routed to the external peer, local there.
	for _, p := range []netip.Prefix{raceNet, cdnNet} {
		if err := nl.RouteAdd(&netlink.Route{Dst: ipnet(p), Gw: extV4.AsSlice()}); err != nil {
			t.Fatalf("route %v: %v", p, err)
		}
		elo, err := w.ext.Netlink().LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		if err := w.ext.Netlink().RouteAdd(&netlink.Route{Dst: ipnet(p), LinkIndex: elo.Attrs().Index, Type: syscall.RTN_LOCAL, Table: syscall.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST}); err != nil {
			t.Fatalf("local route %v: %v", p, err)
		}
	}
	w.write("policies.yaml", policies)
	w.write("workloads.yaml", fmt.Sprintf("namespaces:\n- {name: builds}\npods:\n- {namespace: builds, name: runner-0, ips: [%s, %s]}\n", w.pod.IPv4, w.pod.IPv6))
	w.startCoreDNS()
	netmodel.ServeSilent(w.t, w.node.NS, silentAddr) // an upstream that is down without telling
	return w
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (w *world) write(name, content string) string {
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// startCoreDNS runs the authoritative upstream inside the node: the root zone above
// (file plugin, CNAME chains followed) and race.example.com by template
// (r-A-B.race.example.com. A 10.99.A.B).
func (w *world) startCoreDNS() {
	bin := coredns.Binary(w.t)
	db := w.write("db.root", zone)
	dbBig := w.write("db.big", bigZone())
	corefile := fmt.Sprintf(`big.example.com.:5300 {
  bind 127.0.0.1
  bufsize 512
  log . "{proto} {name} {type} {rflags} {rsize}"
  file %s big.example.com
}
race.example.com.:5300 {
  bind 127.0.0.1
  template IN A race.example.com {
    match "^r-(?P<a>[0-9]+)-(?P<b>[0-9]+)[.]race[.]example[.]com[.]$"
    answer "{{ .Name }} 60 IN A 10.99.{{ .Group.a }}.{{ .Group.b }}"
  }
  template IN AAAA race.example.com {
    rcode NOERROR
  }
}
.:5300 {
  bind 127.0.0.1
  file %s .
}
`, dbBig, db)
	cf := w.write("Corefile", corefile)
	w.coredns = w.startProc("coredns", bin, "-conf", cf)
	w.waitDNS(upstreamAddr, "api.example.com.")
}

// proc is a process running inside the node namespace.
type proc = netmodel.Proc

// startProc starts a program inside the node namespace; it is killed at cleanup.
func (w *world) startProc(name, bin string, args ...string) *proc {
	w.t.Helper()
	return netmodel.StartProc(w.t, w.node.NS, w.dir, name, bin, args...)
}

// waitDNS waits until addr (inside the node) answers qname.
func (w *world) waitDNS(addr, qname string) {
	w.t.Helper()
	var lastErr error
	for i := 0; i < 100; i++ {
		r, err := w.exchange(w.node.NS, addr, "udp", qname, dns.TypeA, time.Second)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	w.t.Fatalf("%s does not answer %s: %v", addr, qname, lastErr)
}

// exchange sends one query from inside ns (the socket is created there).
func (w *world) exchange(ns *netmodel.NS, addr, network, qname string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	return netmodel.QueryDNS(ns, addr, network, qname, qtype, timeout)
}

// agentOpts are the flags of one agent.
type agentOpts struct {
	listen, upstream, httpAddr string
	dataplane                  string
	extra                      []string
	// wrap runs the agent through this command (e.g. setpriv with a
	// capability set): wrap[0] is the program, the agent and its arguments follow wrap.
	wrap []string
}

type agent struct {
	*proc
	w        *world
	httpAddr string
	audit    string
}

var agentSeq int

// startAgent runs the real egressd binary inside the node and waits for /readyz.
func (w *world) startAgent(o agentOpts) *agent {
	w.t.Helper()
	if o.listen == "" {
		o.listen = resolverAddr
	}
	if o.upstream == "" {
		o.upstream = upstreamAddr
	}
	if o.httpAddr == "" {
		o.httpAddr = "127.0.0.1:9464"
	}
	if o.dataplane == "" {
		o.dataplane = "nftables"
	}
	agentSeq++
	a := &agent{w: w, httpAddr: o.httpAddr, audit: filepath.Join(w.dir, fmt.Sprintf("audit-%d.jsonl", agentSeq))}
	args := []string{
		"--policies", filepath.Join(w.dir, "policies.yaml"), "--workloads", filepath.Join(w.dir, "workloads.yaml"),
		"--listen", o.listen, "--upstream", o.upstream, "--dataplane", o.dataplane,
		"--lookups", "Enforce", "--audit-log", a.audit, "--http-addr", o.httpAddr,
		"--state-file", filepath.Join(w.dir, "state.json"), "--checkpoint-interval", "200ms",
	}
	args = append(args, o.extra...)
	bin := agentBinary(w.t)
	if len(o.wrap) > 0 {
		bin, args = o.wrap[0], append(append(slices.Clone(o.wrap[1:]), bin), args...)
	}
	a.proc = w.startProc(fmt.Sprintf("egressd-%d", agentSeq), bin, args...)
	a.waitReady()
	return a
}

// http returns a client whose connections are made inside the node.
func (w *world) http() *http.Client {
	return netmodel.HTTPClient(w.node.NS, 5*time.Second)
}

func (a *agent) waitReady() {
	a.w.t.Helper()
	a.WaitReady(a.w.t, a.w.http(), "http://"+a.httpAddr+"/readyz", "egressd ready", time.Minute)
}

// stop sends SIGTERM and waits for the process to exit.
func (a *agent) stop() {
	a.w.t.Helper()
	start := time.Now()
	if !a.Stop(30 * time.Second) {
		a.w.t.Fatalf("%s did not exit after SIGTERM", a.Name)
	}
	a.w.t.Logf("%s exited %s after SIGTERM", a.Name, time.Since(start).Round(time.Millisecond))
}

// auditLines returns the audit events of the agent.
func (a *agent) auditLines() []map[string]any { return testenv.JSONLines(a.audit) }

// query asks the resolver from the pod.
func (w *world) query(network, qname string, qtype uint16) *dns.Msg {
	w.t.Helper()
	r, err := w.exchange(w.pod.NS, resolverAddr, network, qname, qtype, 8*time.Second)
	if err != nil {
		w.t.Fatalf("query %s %s over %s: %v", qname, dns.TypeToString[qtype], network, err)
	}
	return r
}

// connect opens a TCP connection from the pod to ip:80 and reports whether it worked.
func (w *world) connect(ip netip.Addr) bool {
	w.t.Helper()
	ok, err := w.pr.Probe(context.Background(), w.pod, ip, 80, netmodel.TCP, 0)
	if err != nil {
		w.t.Fatalf("probe %v: %v", ip, err)
	}
	return ok
}

func (w *world) dig(args ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := w.pod.Exec(ctx, "", "dig", append([]string{"@" + resolverIP}, args...)...)
	if err != nil {
		w.t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func digStatus(out string) string {
	i := strings.Index(out, "status: ")
	if i < 0 {
		return ""
	}
	s := out[i+len("status: "):]
	if j := strings.IndexByte(s, ','); j >= 0 {
		s = s[:j]
	}
	return s
}
