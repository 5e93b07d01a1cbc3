package kube_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/test/coredns"
)

// TestClusterUninstall: the agent tells a hand-over from an uninstall by its
// DaemonSet (--daemonset). The node has a stand-in for kube-proxy (a DNAT of
// the kube-dns Service IP to a CoreDNS, at a later nat priority than the
// agent's interception). While the DaemonSet exists, a stopped agent leaves
// table inet egressd and the interception in place (pods' lookups fail closed
// until the next agent answers). Once the DaemonSet is deleted, the stopping
// agent removes the table, its resolver address and its checkpoint: the pod's
// lookups through the Service IP are answered by CoreDNS again (a name the
// policy blocked resolves) and the policy no longer applies.
func TestClusterUninstall(t *testing.T) {
	c := newCluster(t)
	c.dnsService("10.96.0.10")
	// kube-proxy's part: 10.96.0.10:53 → a CoreDNS on 169.254.20.11:5300.
	lo, err := c.node.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.node.Netlink().AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("169.254.20.11"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(c.dir, "Corefile.svc")
	if err := os.WriteFile(cf, []byte(fmt.Sprintf(".:5300 {\n  bind 169.254.20.11\n  file %s .\n}\n", filepath.Join(c.dir, "db.root"))), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(c.dir, "kube-proxy.nft")
	if err := os.WriteFile(rules, []byte(`table ip fake-kube-proxy {
	chain services {
		type nat hook prerouting priority dstnat + 10; policy accept;
		ip daddr 10.96.0.10 udp dport 53 dnat to 169.254.20.11:5300
		ip daddr 10.96.0.10 tcp dport 53 dnat to 169.254.20.11:5300
	}
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.node.Exec(c.ctx, "", "nft", "-f", rules); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	svcDNS := c.start("coredns-svc", coredns.Binary(t), "-conf", cf)
	waitFor(t, 20*time.Second, "the Service IP answered by CoreDNS without an agent", func() bool {
		select {
		case <-svcDNS.Exited:
			t.Fatalf("coredns exited:\n%s", svcDNS.Out.String())
		default:
		}
		out, err := c.web.Exec(c.ctx, "", "dig", "+short", "+time=1", "+tries=1", "@10.96.0.10", "evil.example.com")
		return err == nil && strings.TrimSpace(string(out)) == "192.0.2.10"
	})

	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "egressd", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "egressd"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "egressd"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "egressd", Image: "ghcr.io/egressd/egressd:0.1.0"}}},
			},
		},
	}
	if _, err := c.cs.AppsV1().DaemonSets("default").Create(c.ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tables := func() string {
		out, err := c.node.Exec(c.ctx, "", "nft", "list", "tables")
		if err != nil {
			t.Fatalf("nft list tables: %v\n%s", err, out)
		}
		return string(out)
	}
	checkEnforced := func(when string) {
		t.Helper()
		waitFor(t, 20*time.Second, when+": 10.96.0.10 intercepted", func() bool { return strings.Contains(c.interceptRules(), "10.96.0.10") })
		if st, _ := c.dig("10.96.0.10", "evil.example.com"); st != "NXDOMAIN" {
			t.Fatalf("%s: blocked name through the Service IP: %s, want NXDOMAIN from the agent", when, st)
		}
	}

	// A hand-over: the DaemonSet is still there.
	a := c.startAgent("--daemonset", "default/egressd")
	c.waitReady(a)
	checkEnforced("agent A")
	c.stop(a)
	if !strings.Contains(tables(), "table inet egressd") || !strings.Contains(c.interceptRules(), "10.96.0.10") {
		t.Fatalf("agent A stopped with its DaemonSet in place: the table or interception is gone:\n%s", tables())
	}
	if !strings.Contains(a.Out.String(), "kernel state kept for the next agent") {
		t.Errorf("agent A did not log the hand-over:\n%s", a.Out.String())
	}

	// The uninstall: the DaemonSet is deleted, then its pod stops.
	b := c.startAgent("--daemonset", "default/egressd")
	c.waitReady(b)
	checkEnforced("agent B")
	if c.connect(c.db.IPv4) {
		t.Fatal("agent B: web → db allowed, want the policy enforced")
	}
	if err := c.cs.AppsV1().DaemonSets("default").Delete(c.ctx, "egressd", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.stop(b)
	if s := tables(); strings.Contains(s, "egressd") || !strings.Contains(s, "fake-kube-proxy") {
		t.Fatalf("after the uninstall: tables\n%s\nwant inet egressd gone and the other table kept", s)
	}
	if !strings.Contains(b.Out.String(), "stopping for good") {
		t.Errorf("agent B did not log the uninstall:\n%s", b.Out.String())
	}
	if st, addrs := c.dig("10.96.0.10", "evil.example.com"); st != "NOERROR" || len(addrs) != 1 {
		t.Fatalf("after the uninstall the pod's lookup through the Service IP: %s %v, want CoreDNS's answer", st, addrs)
	}
	if !c.connect(c.db.IPv4) {
		t.Error("after the uninstall web → db is still denied")
	}
	addrs, err := c.node.Netlink().AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.String() == nodeResolverIP {
			t.Errorf("after the uninstall %s is still on lo", nodeResolverIP)
		}
	}
	if _, err := os.Stat(filepath.Join(c.dir, "state.json")); !os.IsNotExist(err) {
		t.Errorf("after the uninstall the checkpoint is still there (%v)", err)
	}
}
