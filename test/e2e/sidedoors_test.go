package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// otherResolverAnswer is what the resolver on the external peer answers: a
// pod that gets it has bypassed egressd.
var otherResolverAnswer = netip.MustParseAddr("10.1.1.1")

// serveOtherResolver runs a plain resolver (UDP and TCP) on the external
// peer's address that answers every A query with otherResolverAnswer, and TCP
// listeners on 443 and 853 that greet every connection.
func serveOtherResolver(t *testing.T, ext *netmodel.Pod) {
	t.Helper()
	h := dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: otherResolverAnswer.AsSlice()}}
		_ = rw.WriteMsg(m)
	})
	addr := netip.AddrPortFrom(extV4, 53).String()
	var pc net.PacketConn
	var ln net.Listener
	err := ext.Do(func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	us, ts := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	for _, port := range []string{"443", "853"} {
		l, err := netmodel.ListenTCP(ext.NS, ":"+port)
		if err != nil {
			t.Fatal(err)
		}
		netmodel.ServeTCP(t, l, func(c net.Conn) { fmt.Fprintf(c, "hello from %s\n", c.LocalAddr()) })
	}
}

// TestSideDoorsAgent: the real agent with its defaults closes the side doors
// of a pod no policy restricts: `dig @192.0.2.10` (another resolver) is
// answered by egressd with its policy, and the audit event names the original
// destination; DoT (TCP 853) and DoH (443 to an address of --doh-resolvers)
// are dropped and reported as dns.bypass.blocked with the resolver's name;
// HTTPS to an address not in the list still works.
func TestSideDoorsAgent(t *testing.T) {
	w := newWorld(t)
	serveOtherResolver(t, w.ext)
	// Only the Admin deny: the pod's egress is otherwise unrestricted.
	w.write("policies.yaml", policies[:strings.Index(policies, "---")])
	list := w.write("doh.txt", "# test list\n"+extV4.String()+" doh.test\n")
	a := w.startAgent(agentOpts{extra: []string{"--nflog-group", "5", "--doh-resolvers", list}})

	other := netip.AddrPortFrom(extV4, 53).String()
	for _, network := range []string{"udp", "tcp"} {
		r, err := w.exchange(w.pod.NS, other, network, "pool.minepool.com", dns.TypeA, 5*time.Second)
		if err != nil {
			t.Fatalf("%s query to another resolver: %v", network, err)
		}
		wantRcode(t, r, dns.RcodeNameError, "pool.minepool.com asked of "+other+" over "+network+" (egressd must answer)")
		r, err = w.exchange(w.pod.NS, other, network, "api.example.com", dns.TypeA, 5*time.Second)
		if err != nil {
			t.Fatalf("%s query to another resolver: %v", network, err)
		}
		if ips := netmodel.AnswerAddrs(r); len(ips) != 1 || ips[0] != extV4 {
			t.Fatalf("%s: api.example.com asked of %s answered %v: want egressd's answer %v, not the other resolver's %v", network, other, ips, extV4, otherResolverAnswer)
		}
	}
	// dig, the real client, too.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := w.pod.Exec(ctx, "", "dig", "@"+extV4.String(), "+tries=1", "+time=3", "pool.minepool.com")
	if err != nil || digStatus(string(out)) != "NXDOMAIN" {
		t.Fatalf("dig @%s pool.minepool.com: %v\n%s", extV4, err, out)
	}

	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	for _, c := range []struct {
		to   netip.Addr
		port int
		want bool
	}{
		{extV4, 853, false},  // DoT
		{extV4, 443, false},  // DoH: in --doh-resolvers
		{cdnEdge, 443, true}, // HTTPS elsewhere (routed to the external peer)
		{extV4, 80, false},   // any port of a DoH resolver but 53
	} {
		ok, err := w.pr.Probe(ctx2, w.pod, c.to, c.port, netmodel.TCP, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ok != c.want {
			t.Errorf("TCP %s:%d from the pod: connected %v, want %v", c.to, c.port, ok, c.want)
		}
	}

	// The audit log: the blocked lookup with its original destination, and
	// the side-door drops.
	var sawRedirected, sawDoT, sawDoH bool
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !(sawRedirected && sawDoT && sawDoH) {
		for _, ev := range a.auditLines() {
			attrs, _ := ev["attrs"].(map[string]any)
			switch ev["event"] {
			case "dns.lookup.blocked":
				if ev["qname"] == "pool.minepool.com." && attrs["egressd.dns.original_destination"] == other {
					sawRedirected = true
				}
			case "dns.bypass.blocked":
				if ev["workload"] != "builds/runner-0" || attrs["server.address"] != extV4.String() {
					continue
				}
				switch attrs["egressd.dns.side_door"] {
				case "dot":
					sawDoT = attrs["server.port"] == "853"
				case "doh":
					sawDoH = sawDoH || attrs["egressd.dns.resolver"] == "doh.test"
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !sawRedirected || !sawDoT || !sawDoH {
		t.Errorf("audit: redirected lookup with its original destination %v, dns.bypass.blocked dot %v, doh %v\n%v", sawRedirected, sawDoT, sawDoH, a.auditLines())
	}
	rules, err := w.node.Exec(t.Context(), "", "nft", "list", "table", "inet", "egressd")
	if err != nil || !strings.Contains(string(rules), "chain sd_dns_redirect") || !strings.Contains(string(rules), "chain sd_filter") {
		t.Fatalf("side-door chains: %v\n%s", err, rules)
	}
}
