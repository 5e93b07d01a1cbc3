package attack

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// nodeResolverAnswer is what the node's own resolver (a stand-in for
// systemd-resolved or a node-local cache on the node's addresses) answers.
var nodeResolverAnswer = netip.MustParseAddr("203.0.113.1")

// startNodeResolver serves plain DNS (UDP) on the node's own addresses, and a
// TCP greeter on their port 853, in the node namespace.
func startNodeResolver(t *testing.T, w *World, addrs ...netip.Addr) {
	t.Helper()
	h := dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: nodeResolverAnswer.AsSlice()}}
		}
		_ = rw.WriteMsg(m)
	})
	for _, a := range addrs {
		var pc net.PacketConn
		if err := w.Node.Do(func() (err error) {
			pc, err = net.ListenPacket("udp", netip.AddrPortFrom(a, 53).String())
			return err
		}); err != nil {
			t.Fatalf("node resolver on %s: %v", a, err)
		}
		s := &dns.Server{PacketConn: pc, Handler: h}
		go s.ActivateAndServe()
		t.Cleanup(func() { _ = s.Shutdown() })
		ln, err := netmodel.ListenTCP(w.Node.NS, netip.AddrPortFrom(a, 853).String())
		if err != nil {
			t.Fatal(err)
		}
		netmodel.ServeTCP(t, ln, func(c net.Conn) { fmt.Fprintf(c, "dot on the node\n") })
	}
}

// nodeQuery asks pool.minepool.test of server from inside ns.
func nodeQuery(ns *netmodel.NS, server netip.AddrPort) (string, error) {
	r, err := netmodel.QueryDNS(ns, server.String(), "udp", "pool.minepool.test.", dns.TypeA, 2*time.Second)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %v", Rcode(r), AnswerAddrs(r)), nil
}

// TestSideDoorsSpareTheNode: hostNetwork pods are the node — they have no
// address of their own, no pod policy applies to them (docs/security.md), and
// the side-door rules must not touch their DNS. A process in the node's own
// namespace (the hostNetwork pod stand-in) reaches the node's resolver on the
// node's IPv4 and IPv6 addresses (plain DNS and TCP 853) and the external
// resolvers 8.8.8.8 and 2001:4860:4860::8888 directly, even with the node's
// addresses listed as a workload in the workloads file (what a file-mode
// user could write for a hostNetwork pod), while the pod on its veth asking
// the same servers is redirected to egressd (IPv4) or dropped (IPv6: egressd
// listens on IPv4 only; DoT to the node's 853 too).
func TestSideDoorsSpareTheNode(t *testing.T) {
	w := New(t, Config{Zone: "www.ok.test. 60 IN A 192.0.2.10\n", Policies: denyMiningPolicies})
	for _, a := range append(rogueV4, rogueV6) {
		routeToExternal(t, w, a)
	}
	startRogueResolvers(t, w)
	node4, node6 := w.External.NodeIPv4, w.External.NodeIPv6
	startNodeResolver(t, w, node4, node6)
	pod := w.Pods[0]
	// The workloads file: the pod, and a hostNetwork stand-in with the node's
	// own addresses.
	var doc map[string]any
	if err := json.Unmarshal([]byte(w.workloadsFor(nil)), &doc); err != nil {
		t.Fatal(err)
	}
	doc["namespaces"] = append(doc["namespaces"].([]any), map[string]any{"name": "monitoring"})
	doc["pods"] = append(doc["pods"].([]any), map[string]any{"namespace": "monitoring", "name": "node-exporter", "ips": []string{node4.String(), node6.String()}})
	b, _ := json.Marshal(doc)
	w.WriteWorkloads(string(b) + "\n")
	a := w.StartAgent(AgentOptions{Extra: []string{"--nflog-group", "7"}})

	rogue := "NOERROR [" + sideDoorAnswer.String() + "]"
	nodeAns := "NOERROR [" + nodeResolverAnswer.String() + "]"
	for _, c := range []struct {
		who    string
		ns     *netmodel.NS
		server netip.AddrPort
		want   string // "" : no answer
	}{
		{"node", w.Node.NS, netip.AddrPortFrom(node4, 53), nodeAns},
		{"node", w.Node.NS, netip.AddrPortFrom(node6, 53), nodeAns},
		{"node", w.Node.NS, netip.AddrPortFrom(rogueV4[0], 53), rogue},
		{"node", w.Node.NS, netip.AddrPortFrom(rogueV6, 53), rogue},
		{"pod", pod.NS, netip.AddrPortFrom(node4, 53), "NXDOMAIN []"}, // redirected to egressd
		{"pod", pod.NS, netip.AddrPortFrom(rogueV4[0], 53), "NXDOMAIN []"},
		{"pod", pod.NS, netip.AddrPortFrom(node6, 53), ""}, // dropped
		{"pod", pod.NS, netip.AddrPortFrom(rogueV6, 53), ""},
	} {
		got, err := nodeQuery(c.ns, c.server)
		switch {
		case c.want == "" && err != nil:
			t.Logf("%-4s → %-28s dropped (%s)", c.who, c.server, shortErr(err))
		case err == nil && got == c.want:
			t.Logf("%-4s → %-28s %s", c.who, c.server, got)
		default:
			t.Errorf("%s → %s: %q %v, want %q", c.who, c.server, got, err, c.want)
		}
	}
	// TCP 853 on the node's addresses: the node reaches it, the pod does not.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ip := range []netip.Addr{node4, node6} {
		var d net.Dialer
		var conn net.Conn
		err := w.Node.Do(func() (err error) {
			conn, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, 853).String())
			return err
		})
		if err != nil {
			t.Errorf("node → %s:853: %v", ip, err)
		} else {
			conn.Close()
		}
		if w.Connect(pod, ip, 853) {
			t.Errorf("pod → %s:853 connected: DoT from a pod must be dropped", ip)
		}
	}
	// Events for the pod, none for the node's addresses.
	if ev := a.WaitAudit(func(l map[string]any) bool { return l["event"] == "dns.bypass.blocked" && l["workload"] == DefaultPod }); ev == nil {
		t.Error("no dns.bypass.blocked event for the pod")
	}
	for _, l := range a.AuditLines() {
		if l["event"] == "dns.bypass.blocked" && (l["client"] == node4.String() || l["client"] == node6.String()) {
			t.Errorf("side-door event for the node's own traffic: %v", l)
		}
	}
}
