package kube_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressd/egressd/telemetry/statusapi"
	"github.com/egressd/egressd/test/coredns"
	"github.com/egressd/egressd/test/kubeapi"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

const (
	nodeResolverIP = "169.254.20.10"
	nodeUpstream   = "127.0.0.1:5300"
	clusterZone    = `$ORIGIN .
@ 3600 IN SOA ns.example.com. admin.example.com. 1 7200 3600 1209600 30
@ 3600 IN NS ns.example.com.
ns.example.com. 60 IN A 127.0.0.1
api.example.com. 60 IN A 192.0.2.10
evil.example.com. 60 IN A 192.0.2.10
`
	webEgress = `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  lookups: Enforce
  egress:
  - name: api
    action: Allow
    to: [{fqdn: {matchName: api.example.com}}]
    ports: [{port: 80, protocol: TCP}]
`
)

// cluster is a netns node whose agent (the egressd binary, cluster mode, nftables)
// reaches the real API server through a forwarder inside the node, with CoreDNS as
// the node's upstream and two API pods backed by netns pods.
type cluster struct {
	t        *testing.T
	ctx      context.Context
	dir      string
	cs       kubernetes.Interface
	dyn      dynamic.Interface
	node     *netmodel.Node
	web, db  *netmodel.Pod
	ext      *netmodel.Pod
	pr       *netmodel.Prober
	kubeconf string
	bin      string
	seq      int
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft", "dig")
	c := &cluster{t: t, ctx: context.Background(), dir: t.TempDir(), pr: &netmodel.Prober{Timeout: 2 * time.Second}}
	// Namespaces first: creating them may end OS threads, and a child started
	// with Pdeathsig (the control plane) dies with the thread that started it.
	c.node = netmodel.NewTestNode(t, netmodel.Options{Prefix: "egk" + fmt.Sprint(os.Getpid()%100000) + "-", Ports: []int{80}})
	pods, err := c.node.AddPodSpecs(netmodel.PodSpec{Name: "shop/web"}, netmodel.PodSpec{Name: "shop/db"})
	if err != nil {
		t.Fatal(err)
	}
	c.web, c.db = pods[0], pods[1]
	if c.ext, err = c.node.AddExternal(netmodel.ExternalSpec{}); err != nil {
		t.Fatal(err)
	}
	lo, err := c.node.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.node.Netlink().AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(nodeResolverIP), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	cp := kubeapi.Start(t)
	c.cs = kubernetes.NewForConfigOrDie(cp.Config)
	c.dyn = dynamic.NewForConfigOrDie(cp.Config)
	applyCRDs(t, c.ctx, c.dyn)
	c.forwardAPI(cp)
	c.startCoreDNS()
	c.bin = testenv.GoBuild(t, "github.com/egressd/egressd/cmd/egressd")

	e := &env{t: t, ctx: c.ctx, cs: c.cs, dyn: c.dyn}
	e.namespace("shop", nil)
	e.pod("shop", "web", "node-1", map[string]string{"app": "web"}, c.web.IPv4.String())
	e.pod("shop", "db", "node-1", map[string]string{"app": "db"}, c.db.IPv4.String())
	e.mustApply(webEgress)
	return c
}

// forwardAPI listens inside the node on 127.0.0.1 and forwards to the API server
// (on the host's loopback), and writes the agent's kubeconfig for it.
func (c *cluster) forwardAPI(cp *kubeapi.ControlPlane) {
	u, err := url.Parse(cp.URL)
	if err != nil {
		c.t.Fatal(err)
	}
	ln, err := netmodel.ListenTCP(c.node.NS, "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	netmodel.ServeTCP(c.t, ln, netmodel.ForwardTo(u.Host)) // to the host namespace
	b, err := os.ReadFile(cp.Kubeconfig)
	if err != nil {
		c.t.Fatal(err)
	}
	kc := strings.Replace(string(b), cp.URL, "https://"+ln.Addr().String(), 1)
	c.kubeconf = filepath.Join(c.dir, "kubeconfig")
	if err := os.WriteFile(c.kubeconf, []byte(kc), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) startCoreDNS() {
	bin := coredns.Binary(c.t)
	db := filepath.Join(c.dir, "db.root")
	cf := filepath.Join(c.dir, "Corefile")
	if err := os.WriteFile(db, []byte(clusterZone), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(cf, []byte(fmt.Sprintf(".:5300 {\n  bind 127.0.0.1\n  file %s .\n}\n", db)), 0o644); err != nil {
		c.t.Fatal(err)
	}
	p := c.start("coredns", bin, "-conf", cf)
	waitFor(c.t, 20*time.Second, "CoreDNS answers", func() bool {
		select {
		case <-p.Exited:
			c.t.Fatalf("coredns exited:\n%s", p.Out.String())
		default:
		}
		out, err := c.node.Exec(c.ctx, "", "dig", "+short", "+time=1", "+tries=1", "-p", "5300", "@127.0.0.1", "api.example.com")
		return err == nil && strings.Contains(string(out), "192.0.2.10")
	})
}

// nodeProc is a process running inside the node namespace.
type nodeProc = netmodel.Proc

// start runs a program inside the node; it is killed at cleanup.
func (c *cluster) start(name, bin string, args ...string) *nodeProc {
	c.t.Helper()
	return netmodel.StartProc(c.t, c.node.NS, c.dir, name, bin, args...)
}

// startAgent runs egressd in cluster mode inside the node (not waiting for ready).
func (c *cluster) startAgent(extra ...string) *nodeProc {
	c.seq++
	args := append([]string{
		"--kubeconfig", c.kubeconf, "--node-name", "node-1", "--lease-namespace", "default",
		"--listen", nodeResolverIP + ":53", "--upstream", nodeUpstream, "--dataplane", "nftables",
		"--http-addr", "127.0.0.1:9464", "--state-file", filepath.Join(c.dir, "state.json"),
		"--checkpoint-interval", "200ms", "--intercept-dns", "auto",
	}, extra...)
	return c.start(fmt.Sprintf("egressd-%d", c.seq), c.bin, args...)
}

// get fetches path from the agent's HTTP address inside the node.
func (c *cluster) get(path string) (int, string, error) {
	hc := netmodel.HTTPClient(c.node.NS, 5*time.Second)
	resp, err := hc.Get("http://127.0.0.1:9464" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (c *cluster) waitReady(p *nodeProc) {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, p.Name+" ready", func() bool {
		select {
		case <-p.Exited:
			c.t.Fatalf("%s exited: %v\n%s", p.Name, p.Cmd.ProcessState, p.Out.String())
		default:
		}
		code, _, err := c.get("/readyz")
		return err == nil && code == http.StatusOK
	})
}

func (c *cluster) stop(p *nodeProc) {
	c.t.Helper()
	if !p.Stop(30 * time.Second) {
		c.t.Fatalf("%s did not exit after SIGTERM", p.Name)
	}
}

// dig runs dig in the web pod against server and returns the status and answers.
func (c *cluster) dig(server, name string) (status string, addrs []string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	out, err := c.web.Exec(ctx, "", "dig", "+time=2", "+tries=2", "@"+server, name, "A")
	if err != nil {
		c.t.Fatalf("dig @%s %s: %v\n%s", server, name, err, out)
	}
	s := string(out)
	if i := strings.Index(s, "status: "); i >= 0 {
		status = s[i+8:]
		if j := strings.IndexByte(status, ','); j >= 0 {
			status = status[:j]
		}
	}
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) == 5 && f[3] == "A" && !strings.HasPrefix(l, ";") {
			addrs = append(addrs, f[4])
		}
	}
	return status, addrs
}

func (c *cluster) connect(to netip.Addr) bool {
	c.t.Helper()
	ok, err := c.pr.Probe(c.ctx, c.web, to, 80, netmodel.TCP, 0)
	if err != nil {
		c.t.Fatalf("probe %v: %v", to, err)
	}
	return ok
}

// dnsService creates (or recreates) kube-system/kube-dns with clusterIP ip.
func (c *cluster) dnsService(ip string) {
	c.t.Helper()
	svcs := c.cs.CoreV1().Services("kube-system")
	if err := svcs.Delete(c.ctx, "kube-dns", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		c.t.Fatal(err)
	}
	_, err := svcs.Create(c.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) interceptRules() string {
	out, _ := c.node.Exec(c.ctx, "", "nft", "list", "chain", "inet", "egressd", "l7_dns_intercept")
	return string(out)
}

// TestClusterDNSInterceptAuto: with --intercept-dns auto the agent programs the
// cluster IP of kube-system/kube-dns (from the real API server) into the DNS
// interception; a real dig from the pod to the Service IP is answered by the
// resolver through the DNAT, with policy; when the Service is recreated with
// another cluster IP, the interception follows.
func TestClusterDNSInterceptAuto(t *testing.T) {
	c := newCluster(t)
	c.dnsService("10.96.0.10")
	a := c.startAgent()
	c.waitReady(a)
	waitFor(t, 20*time.Second, "10.96.0.10 intercepted", func() bool { return strings.Contains(c.interceptRules(), "10.96.0.10") })
	if st, addrs := c.dig("10.96.0.10", "api.example.com"); st != "NOERROR" || len(addrs) != 1 || addrs[0] != "192.0.2.10" {
		t.Fatalf("dig @10.96.0.10 api.example.com: %s %v, want NOERROR 192.0.2.10", st, addrs)
	}
	if st, _ := c.dig("10.96.0.10", "evil.example.com"); st != "NXDOMAIN" {
		t.Fatalf("dig @10.96.0.10 evil.example.com (not allowed, lookups Enforce): %s, want NXDOMAIN", st)
	}
	if !c.connect(netip.MustParseAddr("192.0.2.10")) {
		t.Fatal("api.example.com answer not reachable after the intercepted lookup")
	}

	c.dnsService("10.96.0.53")
	waitFor(t, 20*time.Second, "10.96.0.53 intercepted", func() bool { return strings.Contains(c.interceptRules(), "10.96.0.53") })
	if st, addrs := c.dig("10.96.0.53", "api.example.com"); st != "NOERROR" || len(addrs) != 1 {
		t.Fatalf("dig @10.96.0.53 after the Service changed: %s %v", st, addrs)
	}
	if strings.Contains(c.interceptRules(), "10.96.0.10 ") {
		t.Errorf("the old cluster IP is still intercepted:\n%s", c.interceptRules())
	}
}

// TestClusterAgentRestart: agent A enforces a FirewallPolicy with an FQDN rule;
// the pod resolves the allowed name and keeps a TCP connection open; A stops
// gracefully (kernel state left in place) and agent B starts for the same node:
// during and after the restart the connection stays up, a new connection to the
// resolved address is allowed, a denied destination stays denied, and real
// lookups work once B is ready.
func TestClusterAgentRestart(t *testing.T) {
	c := newCluster(t)
	c.dnsService("10.96.0.10")
	api := netip.MustParseAddr("192.0.2.10")
	a := c.startAgent()
	c.waitReady(a)
	waitFor(t, 20*time.Second, "policy enforced on web → db", func() bool { return !c.connect(c.db.IPv4) })
	if c.connect(api) {
		t.Fatal("192.0.2.10 reachable before any lookup: the FQDN rule is not enforced")
	}
	if st, addrs := c.dig(nodeResolverIP, "api.example.com"); st != "NOERROR" || len(addrs) != 1 || addrs[0] != api.String() {
		t.Fatalf("dig api.example.com: %s %v", st, addrs)
	}
	conn, err := c.pr.OpenConn(c.ctx, c.web, api, 80)
	if err != nil {
		t.Fatalf("long-lived connection to api.example.com: %v", err)
	}
	defer conn.Close()

	check := func(when string) {
		t.Helper()
		if !conn.Alive(3 * time.Second) {
			t.Fatalf("%s: the established connection broke", when)
		}
		if !c.connect(api) {
			t.Fatalf("%s: a new connection to the resolved address is denied", when)
		}
		if c.connect(c.db.IPv4) {
			t.Fatalf("%s: the denied destination (db) is reachable", when)
		}
	}
	check("agent A running")
	c.stop(a)
	check("no agent")
	b := c.startAgent()
	check("agent B starting")
	c.waitReady(b)
	check("agent B ready")
	if st, addrs := c.dig(nodeResolverIP, "api.example.com"); st != "NOERROR" || len(addrs) != 1 {
		t.Fatalf("lookup after the restart: %s %v", st, addrs)
	}
	if st, _ := c.dig(nodeResolverIP, "evil.example.com"); st != "NXDOMAIN" {
		t.Fatalf("blocked lookup after the restart: %s, want NXDOMAIN", st)
	}
	if st, _ := c.dig("10.96.0.10", "api.example.com"); st != "NOERROR" {
		t.Fatalf("intercepted lookup after the restart: %s", st)
	}
	check("after lookups with agent B")
}

// TestAgentStatus: `egressctl status` against the live agent (cluster mode, in a
// netns node): after one blocked lookup the count is 1 and the name and workload
// are listed; every kernel set's element count equals what `nft -j list table`
// shows in the node; the sync state says synced and applied.
func TestAgentStatus(t *testing.T) {
	c := newCluster(t)
	c.dnsService("10.96.0.10")
	ctl := testenv.GoBuild(t, "github.com/egressd/egressd/cmd/egressctl")
	a := c.startAgent()
	c.waitReady(a)
	waitFor(t, 20*time.Second, "policy enforced on web → db", func() bool { return !c.connect(c.db.IPv4) })
	if st, _ := c.dig(nodeResolverIP, "evil.example.com"); st != "NXDOMAIN" {
		t.Fatalf("evil.example.com: %s, want NXDOMAIN (blocked)", st)
	}
	if st, _ := c.dig(nodeResolverIP, "api.example.com"); st != "NOERROR" {
		t.Fatalf("api.example.com: %s", st)
	}
	ctlRun := func(args ...string) string {
		t.Helper()
		out, err := c.node.Exec(c.ctx, "", ctl, append([]string{"status", "--agent", "http://127.0.0.1:9464"}, args...)...)
		if err != nil {
			t.Fatalf("egressctl status %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var st statusapi.Status
	if err := json.Unmarshal([]byte(ctlRun("--since", "10m", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Sync.Source != "kubernetes" || !st.Sync.SourceSynced || st.Sync.Policies != 1 || st.Sync.AppliedPlan == 0 {
		t.Errorf("sync state %+v, want kubernetes, synced, 1 policy, a plan applied", st.Sync)
	}
	if st.Blocked.Count != 1 || len(st.Blocked.TopNames) != 1 || st.Blocked.TopNames[0] != (statusapi.Counted{Key: "evil.example.com", Count: 1}) ||
		len(st.Blocked.TopWorkloads) != 1 || st.Blocked.TopWorkloads[0] != (statusapi.Counted{Key: "shop/web", Count: 1}) {
		t.Errorf("blocked = %+v, want 1 lookup of evil.example.com by shop/web", st.Blocked)
	}
	if st.Resolver["Blocked"] != 1 || st.Resolver["Queries"] < 2 {
		t.Errorf("resolver stats %v: want Blocked 1, Queries ≥ 2", st.Resolver)
	}
	if len(st.Intercept) != 1 || st.Intercept[0] != "10.96.0.10:53" {
		t.Errorf("dnsIntercept %v, want [10.96.0.10:53]", st.Intercept)
	}
	// The kernel's own view.
	out, err := c.node.Exec(c.ctx, "", "nft", "-j", "list", "table", "inet", "egressd")
	if err != nil {
		t.Fatalf("nft -j list table: %v\n%s", err, out)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	kernel := map[string]int{}
	for _, o := range doc.Nftables {
		for _, kind := range []string{"set", "map"} {
			raw, ok := o[kind]
			if !ok {
				continue
			}
			var s struct {
				Name string            `json:"name"`
				Elem []json.RawMessage `json:"elem"`
			}
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			kernel[s.Name] = len(s.Elem)
		}
	}
	got := map[string]int{}
	fqdn := 0
	for _, s := range st.Sets {
		got[s.Name] = s.Elements
		if strings.HasPrefix(s.Name, "fq_") && s.Elements > 0 {
			fqdn++
		}
	}
	if len(got) == 0 || len(got) != len(kernel) {
		t.Errorf("status lists %d sets, the kernel has %d", len(got), len(kernel))
	}
	for name, n := range kernel {
		if got[name] != n {
			t.Errorf("set %s: status says %d elements, nft lists %d", name, got[name], n)
		}
	}
	if fqdn == 0 {
		t.Errorf("no FQDN set with the resolved address: %v", got)
	}
	table := ctlRun("--since", "5m")
	for _, want := range []string{"Blocked lookups in the last 5m0s: 1", "evil.example.com", "shop/web", "synced yes"} {
		if !strings.Contains(table, want) {
			t.Errorf("table output lacks %q:\n%s", want, table)
		}
	}
	t.Logf("egressctl status:\n%s", table)
}
