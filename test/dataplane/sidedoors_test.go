package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/netmodel"
)

// Side doors (issue 16): pods' DNS that does not go to egressd, with real
// packets against the rules the enforcer keeps with WithSideDoors, compared
// with the reference model policy.DecideSideDoor.

var (
	sdResolver4 = netip.MustParseAddrPort("169.254.20.10:53") // "egressd"
	sdResolver6 = netip.MustParseAddrPort("[fd00:a9fe::10]:53")
	sdEgressdIP = netip.MustParseAddr("10.9.9.9") // what "egressd" answers
	sdOtherIP   = netip.MustParseAddr("10.1.1.1") // what the other resolvers answer
)

// sdServeDNS answers every A query with ip, on UDP and TCP at ap inside ns.
func sdServeDNS(t *testing.T, ns *netmodel.NS, ap netip.AddrPort, ip netip.Addr) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip.AsSlice()}}
		_ = w.WriteMsg(m)
	})
	var pc net.PacketConn
	var ln net.Listener
	var err error
	// A fresh IPv6 address may still be settling: retry the bind briefly.
	for i := 0; i < 50; i++ {
		err = ns.Do(func() (err error) {
			if pc, err = net.ListenPacket("udp", ap.String()); err != nil {
				return err
			}
			if ln, err = net.Listen("tcp", ap.String()); err != nil {
				pc.Close()
			}
			return err
		})
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dns server %s: %v", ap, err)
	}
	us, ts := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
}

// sdQuery asks server for example.test A from inside pod; ok false when no
// answer came (dropped).
func sdQuery(pod *netmodel.Pod, server netip.AddrPort, tcp bool) (netip.Addr, bool) {
	c := &dns.Client{Timeout: 400 * time.Millisecond}
	if tcp {
		c.Net = "tcp"
	}
	q := new(dns.Msg)
	q.SetQuestion("example.test.", dns.TypeA)
	var r *dns.Msg
	for attempt := 0; attempt < 2 && r == nil; attempt++ {
		_ = pod.Do(func() error {
			var err error
			r, _, err = c.Exchange(q, server.String())
			return err
		})
	}
	if r == nil || len(r.Answer) == 0 {
		return netip.Addr{}, false
	}
	a, ok := r.Answer[0].(*dns.A)
	if !ok {
		return netip.Addr{}, false
	}
	ip, _ := netip.AddrFromSlice(a.A)
	return ip.Unmap(), true
}

// sdAddNodeAddrs puts the resolver addresses on the node's loopback.
func sdAddNodeAddrs(t *testing.T, node *netmodel.Node, addrs ...netip.Addr) {
	t.Helper()
	nl := node.Netlink()
	link, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		bits := 32
		if a.Is6() {
			bits = 128
		}
		if err := nl.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSideDoorsConformance: plain DNS to another resolver lands at egressd
// (Redirect) or is dropped (Drop); 853 (DoT over TCP, DoQ over UDP) and the
// DoH list's addresses are dropped; exempt namespaces, dnsBypass Allow and
// dnsBypass.resolvers pass; everything else (a non-DoH 443, egressd itself)
// is untouched. Every cell is measured with real packets for IPv4 and IPv6
// and compared with policy.DecideSideDoor.
func TestSideDoorsConformance(t *testing.T) {
	requireKernel(t)
	ctx := context.Background()
	node := netmodel.NewTestNode(t, netmodel.Options{Ports: []int{80}})
	specs := []netmodel.PodSpec{
		{Name: "x/client"}, // node default: Redirect
		{Name: "x/strict", Labels: map[string]string{"dns": "drop"}},  // dnsBypass Drop
		{Name: "x/own", Labels: map[string]string{"dns": "resolver"}}, // dnsBypass Redirect + resolvers
		{Name: "x/free", Labels: map[string]string{"dns": "allow"}},   // dnsBypass Allow
		{Name: "kube-system/coredns"},                                 // exempt namespace
	}
	pods, err := node.AddPodSpecs(specs...)
	if err != nil {
		t.Fatal(err)
	}
	doh, err := node.AddExternal(netmodel.ExternalSpec{Name: "doh", Ports: []int{443, 853},
		IPv4: netip.MustParsePrefix("192.0.2.10/24"), IPv6: netip.MustParsePrefix("2001:db8::10/64")})
	if err != nil {
		t.Fatal(err)
	}
	other, err := node.AddExternal(netmodel.ExternalSpec{Name: "web", Ports: []int{443, 853},
		IPv4: netip.MustParsePrefix("198.51.100.10/24"), IPv6: netip.MustParsePrefix("2001:db8:1::10/64")})
	if err != nil {
		t.Fatal(err)
	}
	sdAddNodeAddrs(t, node, sdResolver4.Addr(), sdResolver6.Addr())
	// "egressd" on the node, and another resolver on each external (their
	// identity servers answer on 443 and 853).
	sdServeDNS(t, node.NS, sdResolver4, sdEgressdIP)
	sdServeDNS(t, node.NS, sdResolver6, sdEgressdIP)
	externals := []*netmodel.Pod{doh, other}
	for _, x := range externals {
		sdServeDNS(t, x.NS, netip.AddrPortFrom(x.IPv4, 53), sdOtherIP)
		sdServeDNS(t, x.NS, netip.AddrPortFrom(x.IPv6, 53), sdOtherIP)
	}

	store := policy.NewStore()
	for _, ns := range []string{"x", "kube-system"} {
		if err := store.UpsertNamespace(policy.Namespace{Name: ns, Labels: map[string]string{"kubernetes.io/metadata.name": ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		if err := store.UpsertWorkload(policy.Workload{Namespace: p.Namespace, Name: p.PodName, Labels: p.Labels, IPs: []netip.Addr{p.IPv4, p.IPv6}}); err != nil {
			t.Fatal(err)
		}
	}
	cfwp := func(name string, prio int32, label string, d policy.DNSBypass) {
		t.Helper()
		p := &policy.ClusterFirewallPolicy{Spec: policy.ClusterFirewallPolicySpec{Tier: policy.TierAdmin, Priority: prio,
			Subject: policy.Subject{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"dns": label}}}, DNSBypass: &d}}
		p.Name = name
		if err := store.UpsertClusterFirewallPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	cfwp("dns-drop", 10, "drop", policy.DNSBypass{Action: policy.DNSBypassDrop})
	cfwp("own-resolver", 10, "resolver", policy.DNSBypass{Resolvers: []string{"198.51.100.10/32", "2001:db8:1::/64"}})
	cfwp("dns-allow", 10, "allow", policy.DNSBypass{Action: policy.DNSBypassAllow})

	nodeCfg := policy.DNSBypassNode{ExemptNamespaces: []string{"kube-system"}}
	dohList := []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("2001:db8::10/128")}
	enf, err := egress.New(egress.WithNetNS(node.Fd()), egress.WithNFLog(7),
		egress.WithDNSExempt(sdResolver4, sdResolver6),
		egress.WithSideDoors(egress.SideDoors{Node: nodeCfg, To4: sdResolver4, To6: sdResolver6, DoH: dohList}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enf.Close() })
	comp := policy.NewCompiler(store, policy.Options{})
	plan, ch := comp.Compile()
	if err := enf.Apply(ctx, plan, ch); err != nil {
		t.Fatal(err)
	}
	eng := policy.NewEngine(store, policy.Options{})
	isSelf := func(a netip.Addr) bool { return a == sdResolver4.Addr() || a == sdResolver6.Addr() }
	isDoH := func(a netip.Addr) bool {
		for _, p := range dohList {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	pr := &netmodel.Prober{Timeout: 300 * time.Millisecond}
	var mismatches []string
	cells := 0
	for _, fam := range []netmodel.Family{netmodel.IPv4, netmodel.IPv6} {
		for _, p := range pods {
			key := policy.WorkloadKey{Namespace: p.Namespace, Name: p.PodName}
			set := nodeCfg.Effective(p.Namespace, eng.DNSBypass(key))
			for _, x := range externals {
				dst := x.Addr(fam)
				for _, proto := range []policy.Protocol{policy.ProtocolUDP, policy.ProtocolTCP} {
					for _, port := range []int{53, 443, 853} {
						cells++
						c := policy.Connection{Src: p.Addr(fam), Dst: dst, Port: int32(port), Protocol: proto}
						want := policy.DecideSideDoor(c, set, nodeCfg, isSelf, isDoH, true)
						var got policy.SideDoorVerdict
						if port == 53 {
							ip, ok := sdQuery(p, netip.AddrPortFrom(dst, 53), proto == policy.ProtocolTCP)
							switch {
							case !ok:
								got = policy.SideDoorDropped
							case ip == sdEgressdIP:
								got = policy.SideDoorRedirected
							default:
								got = policy.SideDoorPass
							}
						} else {
							ok, err := pr.Probe(ctx, p, dst, port, netmodel.Protocol(proto), 0)
							if err != nil {
								t.Fatal(err)
							}
							if !ok { // a loaded machine: once more, slower
								ok, _ = pr.Probe(ctx, p, dst, port, netmodel.Protocol(proto), time.Second)
							}
							got = policy.SideDoorPass
							if !ok {
								got = policy.SideDoorDropped
							}
						}
						if got != want.Verdict {
							mismatches = append(mismatches, fmt.Sprintf("%s → %s %s/%d: kernel %s, model %s (%s)", p.Name, dst, proto, port, got, want.Verdict, want.Reason))
						}
					}
				}
			}
			// egressd itself is always reachable.
			if ip, ok := sdQuery(p, netip.AddrPortFrom(map[netmodel.Family]netip.Addr{netmodel.IPv4: sdResolver4.Addr(), netmodel.IPv6: sdResolver6.Addr()}[fam], 53), false); !ok || ip != sdEgressdIP {
				mismatches = append(mismatches, fmt.Sprintf("%s → egressd %v: %v %v", p.Name, fam, ip, ok))
			}
		}
	}
	if len(mismatches) > 0 {
		out, _ := node.Exec(ctx, "", "nft", "list", "table", "inet", "egressd")
		t.Fatalf("%d of %d cells differ from the model:\n%s\n%s", len(mismatches), cells, strings.Join(mismatches, "\n"), out)
	}
	t.Logf("%d cells agree with the model (v4 and v6)", cells)

	// Size: the rules the kernel holds for the side doors, against the
	// documented count (21, plus 4 per distinct dnsBypass.resolvers list: one
	// here) and the enforcer's own count.
	kernelRules := 0
	for _, ch := range []string{egress.SideDoorFilterChain, egress.SideDoorNATChain} {
		out, err := node.Exec(ctx, "", "nft", "-a", "list", "chain", "inet", "egressd", ch)
		if err != nil {
			t.Fatalf("nft list chain %s: %v %s", ch, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "# handle") && !strings.Contains(l, "{") { // a rule, not the table or chain line
				kernelRules++
			}
		}
	}
	if kernelRules != 22+4 || enf.SideDoorRuleCount() != kernelRules {
		t.Errorf("side-door rules: kernel %d, enforcer %d, documented 26", kernelRules, enf.SideDoorRuleCount())
	}
	t.Logf("side-door rules in the kernel: %d", kernelRules)

	// The agent learns where a redirected query was going from conntrack's
	// original tuple (UDP has no SO_ORIGINAL_DST).
	od, err := egress.NewOriginalDestinations(node.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer od.Close()
	client := pods[0]
	for _, to := range []struct {
		dst, resolver netip.AddrPort
	}{{netip.AddrPortFrom(other.IPv4, 53), sdResolver4}, {netip.AddrPortFrom(other.IPv6, 53), sdResolver6}} {
		var local netip.AddrPort
		err := client.Do(func() error {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to.dst))
			if err != nil {
				return err
			}
			defer c.Close()
			q := new(dns.Msg)
			q.SetQuestion("example.test.", dns.TypeA)
			co := &dns.Conn{Conn: c}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if err := co.WriteMsg(q); err != nil {
				return err
			}
			if _, err := co.ReadMsg(); err != nil {
				return err
			}
			local = c.LocalAddr().(*net.UDPAddr).AddrPort()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := od.Lookup(17, local, to.resolver)
		if err != nil || !ok || got != to.dst {
			t.Errorf("original destination of %s → %s (redirected to %s): %v %v %v", local, to.dst, to.resolver, got, ok, err)
		}
	}
	if _, ok, err := od.Lookup(17, netip.MustParseAddrPort("10.244.9.9:4444"), sdResolver4); ok || err != nil {
		t.Errorf("lookup of a flow that does not exist: %v %v", ok, err)
	}
}
