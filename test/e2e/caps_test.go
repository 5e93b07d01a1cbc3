package e2e

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

// TestAgentWithDaemonSetCapabilities runs the agent as the DaemonSet does: as
// root with exactly the capabilities deploy/daemonset.yaml leaves it (the
// runtime defaults minus its drop list plus its add list; setpriv limits the
// bounding set), with a --listen address the node does not have. The agent
// must create its dummy interface with that address, bind port 53 on it,
// program nftables, and answer and enforce lookups from the pod.
func TestAgentWithDaemonSetCapabilities(t *testing.T) {
	w := newWorld(t)
	setpriv := testenv.RequireTools(t, "setpriv")[0]
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatal(err)
	}
	sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
	var add, drop []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	for _, c := range sc.Capabilities.Drop {
		drop = append(drop, string(c))
	}
	caps := testenv.EffectiveCaps(add, drop)
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(c)
	}
	t.Logf("agent capabilities (from deploy/daemonset.yaml): %v", caps)

	const localIP = "169.254.20.53" // not on the node: the agent adds it
	a := w.startAgent(agentOpts{
		listen: localIP + ":53",
		extra:  []string{"--local-interface", "egressd0"},
		wrap:   []string{setpriv, "--bounding-set", bounding, "--inh-caps", "-all", "--"},
	})
	defer a.stop()

	// The address is on the dummy interface egressd0, or on lo when the
	// kernel has no dummy driver (this CI kernel has none: the agent says so).
	ifname := "egressd0"
	if strings.Contains(a.Out.String(), "kernel has no dummy interfaces") {
		ifname = "lo"
	}
	var addrs []netlink.Addr
	if err := w.node.Do(func() error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if ifname != "lo" && (link.Type() != "dummy" || link.Attrs().Flags&net.FlagUp == 0) {
			t.Errorf("egressd0: type %s flags %v, want an up dummy interface", link.Type(), link.Attrs().Flags)
		}
		addrs, err = netlink.AddrList(link, netlink.FAMILY_V4)
		return err
	}); err != nil {
		t.Fatalf("%s in the node: %v", ifname, err)
	}
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.String() == localIP }) {
		t.Fatalf("%s addresses %v, want %s", ifname, addrs, localIP)
	}
	t.Logf("%s added on %s", localIP, ifname)

	q := func(name string) *dns.Msg {
		t.Helper()
		r, err := w.exchange(w.pod.NS, localIP+":53", "udp", name, dns.TypeA, 5e9)
		if err != nil {
			t.Fatalf("%s from the pod: %v", name, err)
		}
		return r
	}
	r := q("api.example.com")
	wantRcode(t, r, dns.RcodeSuccess, "api.example.com through the agent's own address")
	if ips := netmodel.AnswerAddrs(r); !slices.Equal(ips, []netip.Addr{extV4}) {
		t.Fatalf("answer %v", ips)
	}
	if !w.connect(extV4) {
		t.Fatalf("connection to %v after the allowed lookup failed (kernel set not written?)", extV4)
	}
	wantRcode(t, q("evil.example.com"), dns.RcodeNameError, "evil.example.com")
	if w.connect(neverAsked) {
		t.Fatalf("connection to %v went through", neverAsked)
	}
}
