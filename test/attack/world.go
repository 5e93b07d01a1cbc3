// Package attack replays the attacks of issue 17 against the real egressd binary
// with real packets: a node network namespace (test/netmodel) runs egressd on the
// node-local address 169.254.20.10 with a real CoreDNS upstream, pods are network
// namespaces connected to the node by veth, and the test sends DNS queries from
// inside them (miekg/dns sockets created in the pod namespace, UDP and TCP), then
// reads what the agent did: its answer, its audit log, /metrics, /status and the
// elements of its nftables sets in the node namespace.
//
// The harness is in the package's non-test files (World, Agent and helpers); each
// attack has its own test file (<topic>_test.go). main_test.go holds the package's
// only TestMain: do not add another.
//
// It needs root, nft and CoreDNS (test/coredns); outside CI (CI unset) a missing
// requirement skips with the reason, with CI=true it fails (test/testenv). Every
// namespace, process and file it creates is removed at the test's cleanup; the
// host namespace is never touched.
package attack

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/test/coredns"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

const (
	// ResolverIP is the node-local resolver address egressd listens on (on the
	// node's lo).
	ResolverIP = "169.254.20.10"
	// ResolverAddr is ResolverIP on port 53.
	ResolverAddr = ResolverIP + ":53"
	// UpstreamAddr is CoreDNS inside the node namespace.
	UpstreamAddr = "127.0.0.1:5300"
	// HTTPAddr is the agent's default --http-addr inside the node namespace.
	HTTPAddr = "127.0.0.1:9464"
	// DefaultPod is the pod a Config without Pods gets.
	DefaultPod = "builds/runner-0"
)

// ZoneHeader starts the root zone CoreDNS serves ($ORIGIN ., SOA, NS); the
// records of Config.Zone follow it. ns.test. resolves to 127.0.0.1.
const ZoneHeader = `$ORIGIN .
@ 3600 IN SOA ns.test. admin.test. 1 7200 3600 1209600 30
@ 3600 IN NS ns.test.
ns.test. 60 IN A 127.0.0.1
`

// Config describes a World.
type Config struct {
	// Zone holds the records (one per line, absolute names) of the root zone
	// the upstream serves after ZoneHeader, e.g.
	// "www.alias.test. 60 IN CNAME pool.minepool.test.".
	Zone string
	// ExtraServerBlocks are more CoreDNS server blocks, placed before the root
	// zone's block (e.g. a template plugin for a generated zone). They must bind
	// 127.0.0.1 on port 5300. "$DIR" in them is replaced by World.Dir (where
	// Files are written).
	ExtraServerBlocks string
	// Files are written to World.Dir before CoreDNS starts (name → content).
	Files map[string]string
	// Policies is the content of the --policies file (YAML). The agent
	// refuses to start on a policy file that holds no policy (fail closed,
	// docs/egressd.md "Policy files"), so an empty Policies gives --policies
	// an empty directory instead (no policies), into which WritePolicies
	// writes policies.yaml.
	Policies string
	// Pods are the pod namespaces to create (default: one, DefaultPod).
	Pods []netmodel.PodSpec
	// Unlisted names pods ("namespace/name") left out of the generated
	// workloads file: they exist on the wire but the agent does not know them.
	Unlisted []string
	// Workloads, when set, replaces the generated workloads file.
	Workloads string
}

// World is one node namespace with pods, an external peer and the CoreDNS
// upstream. Agents are started with StartAgent.
type World struct {
	// T is the test that owns the world.
	T testing.TB
	// Dir holds the policies, workloads, zone files, audit logs and state.
	Dir string
	// Node is the node namespace (the agent, CoreDNS and nft run here).
	Node *netmodel.Node
	// Pods are the pods of Config.Pods, in order.
	Pods []*netmodel.Pod
	// External is a host outside the cluster (192.0.2.10, 2001:db8::10 on the
	// node's link 192.0.2.0/24): its default route is the node, so it reaches
	// ResolverIP the way an off-node host that routes to it would.
	External *netmodel.Pod
	// CoreDNS is the upstream process (its output holds any log plugin lines).
	CoreDNS *netmodel.Proc

	agentSeq     int
	policiesPath string
}

// Require checks what every World needs (root, ip, nft) and skips (or fails
// in CI) when it is missing; it also skips under -short.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("testing.Short(): attack test in network namespaces")
	}
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft")
}

// AgentBinaryEnv names an egressd binary to run instead of building
// cmd/egressd: how an attack is replayed against an older agent, e.g. the one
// of main 8ff4d7d for the "before" column of docs/security.md.
const AgentBinaryEnv = "EGRESSD_ATTACK_AGENT"

// AgentBinary returns $EGRESSD_ATTACK_AGENT when set, else builds cmd/egressd
// once per test process (testenv.GoBuild).
func AgentBinary(t testing.TB) string {
	if bin := os.Getenv(AgentBinaryEnv); bin != "" {
		return bin
	}
	return testenv.GoBuild(t, "github.com/egressd/egressd/cmd/egressd")
}

// New builds the world of cfg: node, pods, external peer, ResolverIP on the
// node's lo, the policies and workloads files, and CoreDNS answering on
// UpstreamAddr. Everything is removed at t's cleanup.
func New(t testing.TB, cfg Config) *World {
	t.Helper()
	Require(t)
	AgentBinary(t)
	w := &World{T: t, Dir: t.TempDir()}
	w.Node = netmodel.NewTestNode(t, netmodel.Options{})
	specs := cfg.Pods
	if len(specs) == 0 {
		specs = []netmodel.PodSpec{{Name: DefaultPod}}
	}
	pods, err := w.Node.AddPodSpecs(specs...)
	if err != nil {
		t.Fatal(err)
	}
	w.Pods = pods
	if w.External, err = w.Node.AddExternal(netmodel.ExternalSpec{}); err != nil {
		t.Fatal(err)
	}
	nl := w.Node.Netlink()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ResolverIP), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatalf("add %s to the node's lo: %v", ResolverIP, err)
	}
	w.policiesPath = filepath.Join(w.Dir, "policies.yaml")
	if cfg.Policies == "" {
		// An empty or missing policy file is a partial write to the agent,
		// which then refuses to start: no policies is an empty directory.
		w.policiesPath = filepath.Join(w.Dir, "policies.d")
		if err := os.Mkdir(w.policiesPath, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		w.WritePolicies(cfg.Policies)
	}
	if cfg.Workloads != "" {
		w.WriteWorkloads(cfg.Workloads)
	} else {
		w.WriteWorkloads(w.workloadsFor(cfg.Unlisted))
	}
	for name, content := range cfg.Files {
		w.WriteFile(name, content)
	}
	w.startCoreDNS(cfg)
	return w
}

// Pod returns the pod named "namespace/name" (fails the test when there is none).
func (w *World) Pod(name string) *netmodel.Pod {
	w.T.Helper()
	p := w.Node.Pod(name)
	if p == nil {
		w.T.Fatalf("no pod %q", name)
	}
	return p
}

// WriteFile writes name under Dir and returns its path. The content is
// written to a temporary file next to it (".<name>.tmp", a name the agent's
// directory walk ignores) and renamed over it, so that the agent never reads
// a half-written file: a test that wants a partial write writes that content.
func (w *World) WriteFile(name, content string) string {
	w.T.Helper()
	p := filepath.Join(w.Dir, name)
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		w.T.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		w.T.Fatal(err)
	}
	return p
}

// PoliciesPath is the agent's --policies file (or directory, see
// Config.Policies).
func (w *World) PoliciesPath() string { return w.policiesPath }

// WorkloadsPath is the agent's --workloads file.
func (w *World) WorkloadsPath() string { return filepath.Join(w.Dir, "workloads.yaml") }

// WritePolicies replaces the policies file (the agent reloads it on change).
func (w *World) WritePolicies(content string) {
	w.T.Helper()
	if strings.HasSuffix(w.policiesPath, ".d") {
		w.WriteFile(filepath.Join("policies.d", "policies.yaml"), content)
		return
	}
	w.WriteFile("policies.yaml", content)
}

// WriteWorkloads replaces the workloads file (the agent reloads it on change).
func (w *World) WriteWorkloads(content string) { w.WriteFile("workloads.yaml", content) }

// workloadsFor renders the workloads file of the world's pods except unlisted
// (JSON, which is YAML).
func (w *World) workloadsFor(unlisted []string) string {
	type ns struct {
		Name string `json:"name"`
	}
	type pod struct {
		Namespace string            `json:"namespace"`
		Name      string            `json:"name"`
		Labels    map[string]string `json:"labels,omitempty"`
		IPs       []string          `json:"ips"`
	}
	var doc struct {
		Namespaces []ns  `json:"namespaces"`
		Pods       []pod `json:"pods"`
	}
	seen := map[string]bool{}
	for _, p := range w.Pods {
		if !seen[p.Namespace] {
			seen[p.Namespace] = true
			doc.Namespaces = append(doc.Namespaces, ns{Name: p.Namespace})
		}
		if slices.Contains(unlisted, p.Name) {
			continue
		}
		doc.Pods = append(doc.Pods, pod{Namespace: p.Namespace, Name: p.PodName, Labels: p.Labels, IPs: []string{p.IPv4.String(), p.IPv6.String()}})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		w.T.Fatal(err)
	}
	return string(b) + "\n"
}

// startCoreDNS runs the upstream inside the node and waits until it answers.
func (w *World) startCoreDNS(cfg Config) {
	w.T.Helper()
	bin := coredns.Binary(w.T)
	db := w.WriteFile("db.root", ZoneHeader+cfg.Zone)
	corefile := strings.ReplaceAll(cfg.ExtraServerBlocks, "$DIR", w.Dir) + fmt.Sprintf(`
.:5300 {
  bind 127.0.0.1
  file %s .
}
`, db)
	cf := w.WriteFile("Corefile", corefile)
	w.CoreDNS = netmodel.StartProc(w.T, w.Node.NS, w.Dir, "coredns", bin, "-conf", cf)
	var lastErr error
	for range 100 {
		r, err := Query(w.Node.NS, UpstreamAddr, "udp", "ns.test.", dns.TypeA)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	w.T.Fatalf("CoreDNS does not answer on %s: %v\n%s", UpstreamAddr, lastErr, w.CoreDNS.Out.String())
}

// StartSilent opens a UDP socket and a TCP listener on addr in the node
// namespace that read queries and never answer: an upstream that is down
// without telling (timeouts, no ICMP). They are closed at cleanup.
func (w *World) StartSilent(addr string) {
	w.T.Helper()
	netmodel.ServeSilent(w.T, w.Node.NS, addr)
}

// AgentOptions are the flags of one agent.
type AgentOptions struct {
	// Listen are the --listen addresses (default ResolverAddr).
	Listen []string
	// Upstreams are the --upstream addresses (default UpstreamAddr).
	Upstreams []string
	// HTTPAddr is --http-addr (default HTTPAddr).
	HTTPAddr string
	// BlockedResponse is --blocked-response (default: the agent's, nxdomain).
	BlockedResponse string
	// Lookups is --lookups (default Enforce).
	Lookups string
	// Dataplane is --dataplane (default nftables).
	Dataplane string
	// Extra flags are appended last.
	Extra []string
	// NoWait returns as soon as the process started, without waiting for
	// /readyz (for agents expected to refuse to start: wait on Exited).
	NoWait bool
	// ReadyTimeout bounds the wait for /readyz (default 1 minute: a loaded
	// machine can take tens of seconds to start an agent with a large state).
	ReadyTimeout time.Duration
	// Wrap runs the agent through a command, e.g. {"prlimit",
	// "--nofile=2048"}: Wrap[0] is the program, the agent and its arguments
	// follow the rest of Wrap.
	Wrap []string
}

// Agent is a running egressd process in the node namespace.
type Agent struct {
	*netmodel.Proc
	w *World
	// AuditPath is its --audit-log file.
	AuditPath string
	// HTTPAddr is its --http-addr (inside the node namespace).
	HTTPAddr string
}

// StartAgent runs the real egressd binary in the node namespace (listening on
// ResolverAddr, forwarding to UpstreamAddr, HTTP on HTTPAddr, audit log and
// state file under Dir) and waits until /readyz says it is ready.
func (w *World) StartAgent(o AgentOptions) *Agent {
	w.T.Helper()
	if o.Lookups == "" {
		o.Lookups = "Enforce"
	}
	if o.Dataplane == "" {
		o.Dataplane = "nftables"
	}
	if len(o.Listen) == 0 {
		o.Listen = []string{ResolverAddr}
	}
	if len(o.Upstreams) == 0 {
		o.Upstreams = []string{UpstreamAddr}
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = HTTPAddr
	}
	w.agentSeq++
	a := &Agent{w: w, AuditPath: filepath.Join(w.Dir, fmt.Sprintf("audit-%d.jsonl", w.agentSeq)), HTTPAddr: o.HTTPAddr}
	args := []string{
		"--policies", w.PoliciesPath(), "--workloads", w.WorkloadsPath(), "--dataplane", o.Dataplane,
		"--lookups", o.Lookups, "--audit-log", a.AuditPath, "--http-addr", o.HTTPAddr,
		"--state-file", filepath.Join(w.Dir, "state.json"), "--checkpoint-interval", "200ms",
	}
	for _, l := range o.Listen {
		args = append(args, "--listen", l)
	}
	for _, u := range o.Upstreams {
		args = append(args, "--upstream", u)
	}
	if o.BlockedResponse != "" {
		args = append(args, "--blocked-response", o.BlockedResponse)
	}
	args = append(args, o.Extra...)
	bin := AgentBinary(w.T)
	if len(o.Wrap) > 0 {
		bin, args = o.Wrap[0], append(append(slices.Clone(o.Wrap[1:]), bin), args...)
	}
	a.Proc = netmodel.StartProc(w.T, w.Node.NS, w.Dir, fmt.Sprintf("egressd-%d", w.agentSeq), bin, args...)
	if !o.NoWait {
		a.waitReady(o.ReadyTimeout)
	}
	return a
}

func (a *Agent) waitReady(timeout time.Duration) {
	a.w.T.Helper()
	if timeout <= 0 {
		timeout = time.Minute
	}
	a.WaitReady(a.w.T, netmodel.HTTPClient(a.w.Node.NS, 5*time.Second), "http://"+a.HTTPAddr+"/readyz", "egressd ready", timeout)
}

// StopAgent sends SIGTERM and waits for the agent to exit (fails the test
// after 30 s).
func (a *Agent) StopAgent() {
	a.w.T.Helper()
	if !a.Stop(30 * time.Second) {
		a.w.T.Fatalf("%s did not exit after SIGTERM", a.Name)
	}
}

// Log is the agent's stderr and stdout so far (log/slog text lines).
func (a *Agent) Log() string { return a.Out.String() }

// Get fetches path (e.g. "/status") from the agent's HTTP server.
func (a *Agent) Get(path string) (status int, body []byte, err error) {
	resp, err := netmodel.HTTPClient(a.w.Node.NS, 10*time.Second).Get("http://" + a.HTTPAddr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, body, err
}

// Metrics returns the agent's /metrics text (fails the test on error).
func (a *Agent) Metrics() string {
	a.w.T.Helper()
	code, body, err := a.Get("/metrics")
	if err != nil || code != http.StatusOK {
		a.w.T.Fatalf("/metrics: %d %v", code, err)
	}
	return string(body)
}

// Metric sums the samples of the metric name in /metrics whose label set
// contains every one of labels (each `key="value"`); 0 when there is none.
func (a *Agent) Metric(name string, labels ...string) float64 {
	a.w.T.Helper()
	return MetricValue(a.Metrics(), name, labels...)
}

// MetricValue sums the samples of name in the Prometheus text exposition text
// whose labels contain every one of labels (each `key="value"`).
func MetricValue(text, name string, labels ...string) float64 {
	var sum float64
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		var lbls string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			lbls, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric with name as prefix
		}
		if !allContained(lbls, labels) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func allContained(lbls string, want []string) bool {
	for _, l := range want {
		if !strings.Contains(lbls, l) {
			return false
		}
	}
	return true
}

// Status returns the agent's /status document (fails the test on error).
func (a *Agent) Status() map[string]any {
	a.w.T.Helper()
	code, body, err := a.Get("/status")
	if err != nil || code != http.StatusOK {
		a.w.T.Fatalf("/status: %d %v %.200s", code, err, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		a.w.T.Fatalf("/status: %v", err)
	}
	return m
}

// AuditLines returns the audit events written so far, one map per JSON line.
func (a *Agent) AuditLines() []map[string]any { return testenv.JSONLines(a.AuditPath) }

// WaitAudit returns the first audit event for which match is true, polling
// the file for up to 5 s (the audit log is written asynchronously); nil when
// none came.
func (a *Agent) WaitAudit(match func(map[string]any) bool) map[string]any {
	for range 100 {
		for _, l := range a.AuditLines() {
			if match(l) {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// AuditEvent matches an audit event by its "event" name and "qname" (with or
// without the trailing dot; "" matches any name).
func AuditEvent(event, qname string) func(map[string]any) bool {
	return func(l map[string]any) bool {
		if l["event"] != event {
			return false
		}
		q, _ := l["qname"].(string)
		return qname == "" || strings.TrimSuffix(q, ".") == strings.TrimSuffix(qname, ".")
	}
}

// Query sends one query for qname/qtype with EDNS0 (1232 bytes) from inside
// ns to addr over network ("udp" or "tcp"), with a 5 s timeout.
func Query(ns *netmodel.NS, addr, network, qname string, qtype uint16) (*dns.Msg, error) {
	return netmodel.QueryDNS(ns, addr, network, qname, qtype, 5*time.Second)
}

// Exchange sends m with c from inside ns (the socket is created there, so its
// source is an address of ns; set c.Dialer.LocalAddr to pick one).
func Exchange(ns *netmodel.NS, c *dns.Client, m *dns.Msg, addr string) (*dns.Msg, error) {
	return netmodel.ExchangeDNS(ns, c, m, addr)
}

// Ask queries the resolver (ResolverAddr) from pod over network and fails the
// test when no answer comes.
func (w *World) Ask(pod *netmodel.Pod, network, qname string, qtype uint16) *dns.Msg {
	w.T.Helper()
	r, err := Query(pod.NS, ResolverAddr, network, qname, qtype)
	if err != nil {
		w.T.Fatalf("%s: query %s %s over %s: %v", pod.Name, qname, dns.TypeToString[qtype], network, err)
	}
	return r
}

// Connect opens a TCP connection from pod to ip:port and reports whether it
// was accepted (a dropped SYN is false after the prober's 2 s timeout).
func (w *World) Connect(pod *netmodel.Pod, ip netip.Addr, port int) bool {
	w.T.Helper()
	pr := &netmodel.Prober{Timeout: 2 * time.Second}
	ok, err := pr.Probe(w.T.Context(), pod, ip, port, netmodel.TCP, 0)
	if err != nil {
		w.T.Fatalf("probe %v: %v", ip, err)
	}
	return ok
}

// AnswerAddrs returns the A and AAAA addresses in r's answer section.
func AnswerAddrs(r *dns.Msg) []netip.Addr { return netmodel.AnswerAddrs(r) }

// EDE returns r's Extended DNS Error option, or nil.
func EDE(r *dns.Msg) *dns.EDNS0_EDE {
	if o := r.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// Rcode is r's response code as text ("NXDOMAIN").
func Rcode(r *dns.Msg) string { return dns.RcodeToString[r.Rcode] }

// Set is one named set of the agent's nftables table as the kernel holds it.
type Set struct {
	Name string
	// Elems are the elements, each split into its concatenated parts (an FQDN
	// set element is [pod address, answer address]); intervals are "a-b",
	// prefixes "a/n".
	Elems [][]string
}

// KernelSets reads every named set of table inet egressd in the node namespace
// (`nft -j list table inet egressd`); none when the table does not exist.
func (w *World) KernelSets() map[string]Set {
	w.T.Helper()
	out, err := w.Node.Exec(w.T.Context(), "", "nft", "-j", "list", "table", "inet", "egressd")
	if err != nil {
		if strings.Contains(string(out), "No such file") {
			return nil
		}
		w.T.Fatalf("nft list table: %v\n%s", err, out)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		w.T.Fatalf("nft -j: %v", err)
	}
	sets := map[string]Set{}
	for _, obj := range doc.Nftables {
		raw, ok := obj["set"]
		if !ok {
			continue
		}
		var s struct {
			Name string            `json:"name"`
			Elem []json.RawMessage `json:"elem"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			w.T.Fatalf("nft -j set: %v", err)
		}
		set := Set{Name: s.Name}
		for _, e := range s.Elem {
			set.Elems = append(set.Elems, elemParts(e))
		}
		sets[s.Name] = set
	}
	return sets
}

// elemParts flattens one element of nft's JSON: a value, {"elem": {"val": …}},
// {"concat": […]}, {"prefix": {"addr", "len"}} or {"range": [a, b]}.
func elemParts(raw json.RawMessage) []string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return []string{n.String()}
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return []string{string(raw)}
	}
	if e, ok := obj["elem"]; ok {
		var inner map[string]json.RawMessage
		if json.Unmarshal(e, &inner) == nil {
			if v, ok := inner["val"]; ok {
				return elemParts(v)
			}
		}
	}
	if c, ok := obj["concat"]; ok {
		var parts []json.RawMessage
		json.Unmarshal(c, &parts)
		var out []string
		for _, p := range parts {
			out = append(out, elemParts(p)...)
		}
		return out
	}
	if p, ok := obj["prefix"]; ok {
		var pf struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		}
		json.Unmarshal(p, &pf)
		return []string{fmt.Sprintf("%s/%d", pf.Addr, pf.Len)}
	}
	if r, ok := obj["range"]; ok {
		var rg []json.RawMessage
		json.Unmarshal(r, &rg)
		if len(rg) == 2 {
			return []string{elemParts(rg[0])[0] + "-" + elemParts(rg[1])[0]}
		}
	}
	return []string{string(raw)}
}

// FQDNSetsWith returns the names of the FQDN sets (fq_*) holding an element
// whose answer address (its last part) is addr, sorted.
func (w *World) FQDNSetsWith(addr netip.Addr) []string {
	w.T.Helper()
	var names []string
	for name, s := range w.KernelSets() {
		if !strings.HasPrefix(name, "fq_") {
			continue
		}
		for _, e := range s.Elems {
			if len(e) > 0 && e[len(e)-1] == addr.String() {
				names = append(names, name)
				break
			}
		}
	}
	slices.Sort(names)
	return names
}

// FQDNElements counts the elements of every FQDN set (fq_*).
func (w *World) FQDNElements() int {
	w.T.Helper()
	n := 0
	for name, s := range w.KernelSets() {
		if strings.HasPrefix(name, "fq_") {
			n += len(s.Elems)
		}
	}
	return n
}
