package attack

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/netmodel"
)

// Issue 16 item 4: a pod that learned a denied name's address without asking
// egressd (hard-coded, cached, another channel) connects to it by address.

var (
	deniedV4 = netip.MustParseAddr("198.51.100.66")
	deniedV6 = netip.MustParseAddr("2001:db8:66::66")
	wildV4   = netip.MustParseAddr("198.51.100.77")
	otherV4  = netip.MustParseAddr("198.51.100.88")
)

const preresolvePolicies = `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {}}
  egress:
  - name: mining-pools
    action: Deny
    to: [{fqdn: {matchName: pool.minepool.test}}, {fqdn: {matchPattern: "*.wildpool.test"}}]
`

// TestDenyPreresolvedByAddress: an Admin Deny names pool.minepool.test
// exactly (A 198.51.100.66, AAAA 2001:db8:66::66) and *.wildpool.test by
// wildcard (x.wildpool.test A 198.51.100.77); the pod has no other policy and
// never looks either up. egressd resolves the exact name itself, so the pod's
// connections to its addresses by IP (TCP and UDP, IPv4 and IPv6) are
// dropped, each reported as packet.denied naming the policy and rule. The
// wildcard cannot be pre-resolved: a connection to x.wildpool.test's address
// by IP still goes through (documented in docs/security.md; a named set of
// addresses is the control for that case), as does an address no rule names.
// A connection the pod opened to the address while no rule named the name
// (established in conntrack) is cut once the policy names it and the address
// enters the set (conntrack revocation); one to another address goes on. Against an agent without pre-resolution every
// connection goes through.
func TestDenyPreresolvedByAddress(t *testing.T) {
	w := New(t, Config{Zone: "pool.minepool.test. 60 IN A " + deniedV4.String() + "\npool.minepool.test. 60 IN AAAA " + deniedV6.String() +
		"\nx.wildpool.test. 60 IN A " + wildV4.String() + "\n", Policies: strings.Replace(preresolvePolicies, "{fqdn: {matchName: pool.minepool.test}}, ", "", 1)})
	for _, a := range []netip.Addr{deniedV4, deniedV6, wildV4, otherV4} {
		routeToExternal(t, w, a)
	}
	// UDP echo servers bound to the addresses themselves (the external peer's
	// port 80 servers listen on the wildcard address and would answer from
	// another source address).
	for _, a := range []netip.Addr{deniedV4, deniedV6, otherV4} {
		serveUDPEcho(t, w, netip.AddrPortFrom(a, udpEchoPort))
	}
	pod := w.Pods[0]
	a := w.StartAgent(AgentOptions{Extra: []string{"--nflog-group", "7"}})
	// Connections opened while no rule names pool.minepool.test (a miner
	// already connected to its pool, tracked by conntrack as established):
	// once the policy names it, the one to its address must end, the other
	// stays.
	pr := &netmodel.Prober{Timeout: 2 * time.Second}
	early, err := pr.OpenConn(t.Context(), pod, deniedV4, 80)
	if err != nil {
		t.Fatal(err)
	}
	control, err := pr.OpenConn(t.Context(), pod, otherV4, 80)
	if err != nil {
		t.Fatal(err)
	}
	if !early.Alive(0) || !control.Alive(0) {
		t.Fatal("the connections opened before the policy do not work")
	}
	w.WritePolicies(preresolvePolicies)

	// The pre-resolved addresses reach the rule's sets (fqd_*) soon after
	// the first sync; wait for them (no lookup from any pod).
	var sets []string
	for range 200 {
		sets = w.denySetsWith(deniedV4, deniedV6)
		if len(sets) == 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("pre-resolved sets holding %s / %s: %v", deniedV4, deniedV6, sets)

	type probe struct {
		to    netip.Addr
		port  int
		proto netmodel.Protocol
		want  bool
	}
	for _, p := range []probe{
		{deniedV4, 80, netmodel.TCP, false}, {deniedV4, udpEchoPort, netmodel.UDP, false},
		{deniedV6, 80, netmodel.TCP, false}, {deniedV6, udpEchoPort, netmodel.UDP, false},
		{wildV4, 80, netmodel.TCP, true}, // a wildcard's address: not covered (docs)
		{otherV4, 80, netmodel.TCP, true}, {otherV4, udpEchoPort, netmodel.UDP, true},
	} {
		ok, err := (&netmodel.Prober{Timeout: 2 * time.Second}).Probe(t.Context(), pod, p.to, p.port, p.proto, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ok != p.want {
			t.Errorf("pod → %s:%d/%s by address: connected %v, want %v", p.to, p.port, p.proto, ok, p.want)
		} else {
			t.Logf("pod → %s:%d/%s by address: connected %v", p.to, p.port, p.proto, ok)
		}
	}
	// The flow opened before: its conntrack entry was deleted when the
	// address entered the set (revocation runs right after the set write).
	// Three pings in a row unanswered (one could be lost on a loaded machine).
	alive := false
	for range 3 {
		alive = alive || early.Alive(0)
	}
	if alive {
		t.Error("the connection to the denied address opened before the policy named it still works")
	}
	if !control.Alive(0) {
		t.Error("the connection to an address no rule names was cut")
	}
	for _, ip := range []netip.Addr{deniedV4, deniedV6} {
		ev := a.WaitAudit(func(l map[string]any) bool {
			attrs, _ := l["attrs"].(map[string]any)
			return l["event"] == "packet.denied" && attrs["server.address"] == ip.String() &&
				l["policy"] == "ClusterFirewallPolicy/deny-mining" && strings.Contains(l["rule"].(string), "mining-pools") && l["workload"] == DefaultPod
		})
		if ev == nil {
			t.Errorf("no packet.denied event for %s naming ClusterFirewallPolicy/deny-mining#mining-pools", ip)
		} else {
			t.Logf("event: %v", ev)
		}
	}
	for _, l := range a.AuditLines() {
		if q, _ := l["qname"].(string); strings.Contains(q, "minepool") || strings.Contains(q, "wildpool") {
			t.Errorf("a lookup reached egressd (the test's pod must not look the names up): %v", l)
		}
	}
	names := a.Metric("egressd_deny_preresolve_names")
	addrs := a.Metric("egressd_deny_preresolve_addresses")
	queries := a.Metric("egressd_deny_preresolve_queries_total")
	qpm := a.Metric("egressd_deny_preresolve_queries_per_minute")
	t.Logf("metrics: names %v, addresses %v, queries %v, scheduled queries/min %v", names, addrs, queries, qpm)
	if names != 1 || addrs != 2 || queries < 2 || qpm != 2 {
		t.Errorf("metrics: names %v, addresses %v, queries %v, queries/min %v; want 1 name (the wildcard is not one), 2 addresses, ≥ 2 queries, 2 a minute (TTL 60 s)", names, addrs, queries, qpm)
	}
}

// udpEchoPort is where serveUDPEcho listens.
const udpEchoPort = 7

// serveUDPEcho answers datagrams on ap (inside the external peer) in the
// prober's echo format ("<identity>\n<payload>"), from ap itself.
func serveUDPEcho(t *testing.T, w *World, ap netip.AddrPort) {
	t.Helper()
	var pc net.PacketConn
	if err := w.External.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", ap.String())
		return err
	}); err != nil {
		t.Fatalf("UDP echo on %s: %v", ap, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(fmt.Sprintf("echo:%d\n", ap.Port())), buf[:n]...), from)
		}
	}()
}

// denySetsWith returns the names of the pre-resolved Deny sets (fqd_*)
// holding one of addrs, sorted.
func (w *World) denySetsWith(addrs ...netip.Addr) []string {
	w.T.Helper()
	var names []string
	for name, s := range w.KernelSets() {
		if !strings.HasPrefix(name, "fqd_") {
			continue
		}
		for _, e := range s.Elems {
			if len(e) > 0 && slices.ContainsFunc(addrs, func(a netip.Addr) bool { return e[0] == a.String() }) {
				names = append(names, name)
				break
			}
		}
	}
	slices.Sort(names)
	return names
}
