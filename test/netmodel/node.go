package netmodel

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addresses of the routed (Calico-style) pod model.
var (
	// GatewayV4 is the pod's IPv4 next hop, on the node side of every pod veth.
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	// GatewayV6 is the pod's IPv6 next hop: the link-local address the node-side veth
	// gets from NodeVethMAC.
	GatewayV6 = netip.MustParseAddr("fe80::ecee:eeff:feee:eeee")
	// NodeVethMAC is the MAC of every node-side veth (as Calico does).
	NodeVethMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

// Defaults of Options and ExternalSpec.
var (
	DefaultPodCIDRv4 = netip.MustParsePrefix("10.244.0.0/16")
	DefaultPodCIDRv6 = netip.MustParsePrefix("fd00:244::/64")
	DefaultPorts     = []int{80, 81}
	// DefaultExternalV4/V6: the external peer's address and the subnet of its link to
	// the node; the node side takes the first host address (192.0.2.1, 2001:db8::1).
	DefaultExternalV4 = netip.MustParsePrefix("192.0.2.10/24")
	DefaultExternalV6 = netip.MustParsePrefix("2001:db8::10/64")
)

// ExternalName is the default name of the external peer.
const ExternalName = "external"

// Options configure a Node. The zero value is usable.
type Options struct {
	// Prefix of every namespace name; default DefaultPrefix() ("egt-<pid>-").
	// Keep the "egt-<pid>-" form so that CleanupStale can recognise leftovers.
	Prefix string
	// PodCIDRv4 and PodCIDRv6 are where pod addresses are allocated from
	// (defaults 10.244.0.0/16 and fd00:244::/64). The n-th allocated pod gets host
	// number n+1 in both (10.244.0.2 and fd00:244::2 for the first).
	PodCIDRv4, PodCIDRv6 netip.Prefix
	// Ports every pod serves on TCP and UDP unless its PodSpec says otherwise
	// (default 80, 81).
	Ports []int
	// HostVethPrefix names the node side of pod veths: prefix + index (default "cali").
	HostVethPrefix string
}

// Node is the cluster node: a network namespace with IPv4 and IPv6 forwarding on, a
// routed veth to every pod and optionally to external peers. Programming the node's
// firewall (nftables) is up to the caller: NsHandle/Do/Exec reach the namespace.
type Node struct {
	*NS
	opts Options
	id   string // "<prefix><seq>-"

	mu       sync.Mutex
	pods     []*Pod
	byName   map[string]*Pod
	reserved map[string]bool
	used     map[netip.Addr]bool
	nextIdx  int // pod/interface counter
	nextExt  int
	nextHost int
	closed   bool
}

// Pod is a pod (or an external peer) namespace attached to the node.
type Pod struct {
	*NS
	// Name is "namespace/name" ("external" for the default external peer).
	Name string
	// Namespace and PodName split Name ("" namespace for external peers).
	Namespace, PodName string
	// IPv4 and IPv6 are the pod's addresses (/32 and /128 on eth0; external peers have
	// their link prefixes).
	IPv4, IPv6 netip.Addr
	// Ports served on TCP and UDP, on every address.
	Ports []int
	// HostVeth and HostVethIndex identify the node side of the pod's veth (in the node
	// namespace); the pod side is always "eth0".
	HostVeth      string
	HostVethIndex int
	// MAC of the pod's eth0.
	MAC net.HardwareAddr
	// Labels from the PodSpec (for the caller's policy workloads).
	Labels map[string]string
	// External marks a host outside the cluster (reached through the node, not a pod).
	External bool
	// NodeIPv4/NodeIPv6 are the node's addresses on an external peer's link (zero for
	// pods, whose node side carries no address).
	NodeIPv4, NodeIPv6 netip.Addr

	node   *Node
	nsName string
	srv    *servers
	mu     sync.Mutex
	conns  map[*LiveConn]struct{}
}

// Addr returns the pod's address of the family (invalid if it has none).
func (p *Pod) Addr(f Family) netip.Addr {
	if f == IPv6 {
		return p.IPv6
	}
	return p.IPv4
}

// Identity is what the pod's servers answer on port: "x/a:80".
func (p *Pod) Identity(port int) string { return fmt.Sprintf("%s:%d", p.Name, port) }

func (p *Pod) String() string { return p.Name }

// PodSpec describes a pod to add. Zero addresses are allocated from the node's CIDRs.
type PodSpec struct {
	Name       string // "namespace/name", required
	IPv4, IPv6 netip.Addr
	Ports      []int // default: the node's Options.Ports
	// Labels are carried on the Pod for callers that build policy workloads from it
	// (netmodel itself does not use them).
	Labels map[string]string
}

// ExternalSpec describes a peer outside the cluster, on its own veth to the node.
type ExternalSpec struct {
	Name string // default "external" (must be unique among pods and peers)
	// IPv4 and IPv6 are the peer's address with the prefix of its link to the node
	// (defaults 192.0.2.10/24 and 2001:db8::10/64). The node side of the link takes the
	// first host address of each prefix (192.0.2.1, 2001:db8::1) and is the peer's
	// default gateway.
	IPv4, IPv6 netip.Prefix
	Ports      []int
}

// NewNode creates the node namespace. Close it (or use NewTestNode) to remove every
// namespace it made.
func NewNode(opts Options) (*Node, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix()
	}
	if !opts.PodCIDRv4.IsValid() {
		opts.PodCIDRv4 = DefaultPodCIDRv4
	}
	if !opts.PodCIDRv6.IsValid() {
		opts.PodCIDRv6 = DefaultPodCIDRv6
	}
	opts.PodCIDRv4 = opts.PodCIDRv4.Masked()
	opts.PodCIDRv6 = opts.PodCIDRv6.Masked()
	if len(opts.Ports) == 0 {
		opts.Ports = DefaultPorts
	}
	if opts.HostVethPrefix == "" {
		opts.HostVethPrefix = "cali"
	}
	id := fmt.Sprintf("%s%d-", opts.Prefix, nodeSeq.Add(1))
	ns, err := newNamedNS(id+"node", func(h netns.NsHandle) error {
		for _, kv := range [][2]string{
			{"net.ipv4.ip_forward", "1"},
			{"net.ipv6.conf.all.forwarding", "1"},
			{"net.ipv6.conf.default.forwarding", "1"},
			{"net.ipv6.conf.all.accept_dad", "0"},
			{"net.ipv6.conf.default.accept_dad", "0"},
		} {
			if err := writeSysctl(h, kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Node{NS: ns, opts: opts, id: id, byName: map[string]*Pod{}, reserved: map[string]bool{}, used: map[netip.Addr]bool{}, nextHost: 1}, nil
}

// NewTestNode is NewNode for tests: it first removes stale namespaces of dead runs, fails
// t on error and closes the node in t.Cleanup (also when the test fails).
func NewTestNode(t testing.TB, opts Options) *Node {
	t.Helper()
	if _, err := CleanupStale(); err != nil {
		t.Logf("netmodel: cleaning stale namespaces: %v", err)
	}
	n, err := NewNode(opts)
	if err != nil {
		t.Fatalf("netmodel: new node: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("netmodel: close node: %v", err)
		}
	})
	return n
}

// Options returns the node's effective options.
func (n *Node) Options() Options { return n.opts }

// Pods returns the pods and external peers in creation order.
func (n *Node) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.pods)
}

// Pod returns the pod (or peer) named name, or nil.
func (n *Node) Pod(name string) *Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byName[name]
}

// AddPods adds pods by name ("x/a", "x/b", ...) with allocated addresses, concurrently.
func (n *Node) AddPods(names ...string) ([]*Pod, error) {
	specs := make([]PodSpec, len(names))
	for i, name := range names {
		specs[i] = PodSpec{Name: name}
	}
	return n.AddPodSpecs(specs...)
}

// AddPodSpecs adds pods, creating them concurrently; addresses are allocated in the
// order of specs and Pods lists them in that order. On error the pods that were made stay
// attached (Close removes them).
func (n *Node) AddPodSpecs(specs ...PodSpec) ([]*Pod, error) {
	pods := make([]*Pod, len(specs))
	errs := make([]error, len(specs))
	for i, s := range specs {
		pods[i], errs[i] = n.preparePod(s)
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, p := range pods {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = n.attach(p)
		}()
	}
	wg.Wait()
	for i, p := range pods {
		if p == nil {
			continue
		}
		if errs[i] != nil {
			n.unreserve(p.Name, p.IPv4, p.IPv6)
			errs[i] = fmt.Errorf("netmodel: pod %s: %w", p.Name, errs[i])
			pods[i] = nil
			continue
		}
		if errs[i] = n.register(p); errs[i] != nil {
			pods[i] = nil
		}
	}
	return pods, errors.Join(errs...)
}

// reserve checks the name, allocates addresses and an interface index.
func (n *Node) reserve(name string, v4, v6 netip.Addr, external bool) (idx int, a4, a6 netip.Addr, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return 0, a4, a6, errors.New("netmodel: node closed")
	}
	if name == "" || n.byName[name] != nil || n.reserved[name] {
		return 0, a4, a6, fmt.Errorf("netmodel: pod name %q empty or taken", name)
	}
	if !external {
		for !v4.IsValid() || !v6.IsValid() {
			n.nextHost++
			c4, ok4 := nthAddr(n.opts.PodCIDRv4, n.nextHost)
			c6, ok6 := nthAddr(n.opts.PodCIDRv6, n.nextHost)
			if !ok4 || !ok6 {
				return 0, a4, a6, errors.New("netmodel: pod CIDR exhausted")
			}
			if (!v4.IsValid() && n.used[c4]) || (!v6.IsValid() && n.used[c6]) {
				continue
			}
			if !v4.IsValid() {
				v4 = c4
			}
			if !v6.IsValid() {
				v6 = c6
			}
		}
		if !v4.Is4() || !v6.Is6() || v6.Is4In6() {
			return 0, a4, a6, fmt.Errorf("netmodel: pod %s: bad addresses %v %v", name, v4, v6)
		}
	}
	for _, a := range []netip.Addr{v4, v6} {
		if n.used[a] {
			return 0, a4, a6, fmt.Errorf("netmodel: pod %s: address %v in use", name, a)
		}
	}
	n.used[v4], n.used[v6] = true, true
	n.reserved[name] = true
	if external {
		idx = n.nextExt
		n.nextExt++
	} else {
		idx = n.nextIdx
		n.nextIdx++
	}
	return idx, v4, v6, nil
}

func (n *Node) register(p *Pod) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.reserved, p.Name)
	if n.closed {
		p.close()
		return errors.New("netmodel: node closed")
	}
	n.pods = append(n.pods, p)
	n.byName[p.Name] = p
	return nil
}

func (n *Node) unreserve(name string, addrs ...netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range addrs {
		delete(n.used, a)
	}
	delete(n.reserved, name)
}

func nthAddr(p netip.Prefix, k int) (netip.Addr, bool) {
	a := p.Addr()
	for i := 0; i < k; i++ {
		a = a.Next()
		if !a.IsValid() || !p.Contains(a) {
			return netip.Addr{}, false
		}
	}
	return a, true
}

func podMAC(v4 netip.Addr) net.HardwareAddr {
	b := v4.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}

func hostPrefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// AddPod creates the pod namespace, its servers and its veth to the node.
func (n *Node) AddPod(s PodSpec) (*Pod, error) {
	pods, err := n.AddPodSpecs(s)
	if err != nil {
		return nil, err
	}
	return pods[0], nil
}

func (n *Node) preparePod(s PodSpec) (*Pod, error) {
	if s.Name == ExternalName || !strings.Contains(s.Name, "/") {
		return nil, fmt.Errorf("netmodel: pod name %q must be namespace/name", s.Name)
	}
	idx, v4, v6, err := n.reserve(s.Name, s.IPv4, s.IPv6, false)
	if err != nil {
		return nil, err
	}
	ns, name, _ := strings.Cut(s.Name, "/")
	p := &Pod{
		Name: s.Name, Namespace: ns, PodName: name,
		IPv4: v4, IPv6: v6,
		Ports:    slices.Clone(s.Ports),
		HostVeth: fmt.Sprintf("%s%d", n.opts.HostVethPrefix, idx),
		MAC:      podMAC(v4),
		Labels:   maps.Clone(s.Labels),
		node:     n,
		nsName:   fmt.Sprintf("%sp%d", n.id, idx),
	}
	if len(p.Ports) == 0 {
		p.Ports = slices.Clone(n.opts.Ports)
	}
	return p, nil
}

// AddExternal creates a peer outside the cluster (default "external" at 192.0.2.10 and
// 2001:db8::10) on its own veth to the node, with the same servers as a pod. Pods reach it
// through the node (forwarded traffic, like traffic to the internet), and it reaches pods.
func (n *Node) AddExternal(s ExternalSpec) (*Pod, error) {
	if s.Name == "" {
		s.Name = ExternalName
	}
	if !s.IPv4.IsValid() {
		s.IPv4 = DefaultExternalV4
	}
	if !s.IPv6.IsValid() {
		s.IPv6 = DefaultExternalV6
	}
	if !s.IPv4.Addr().Is4() || !s.IPv6.Addr().Is6() {
		return nil, fmt.Errorf("netmodel: external %s: bad prefixes %v %v", s.Name, s.IPv4, s.IPv6)
	}
	gw4, ok4 := nthAddr(s.IPv4.Masked(), 1)
	gw6, ok6 := nthAddr(s.IPv6.Masked(), 1)
	if !ok4 || !ok6 || gw4 == s.IPv4.Addr() || gw6 == s.IPv6.Addr() {
		return nil, fmt.Errorf("netmodel: external %s: the first host address of %v/%v is the node's", s.Name, s.IPv4, s.IPv6)
	}
	idx, v4, v6, err := n.reserve(s.Name, s.IPv4.Addr(), s.IPv6.Addr(), true)
	if err != nil {
		return nil, err
	}
	p := &Pod{
		Name: s.Name, PodName: s.Name,
		IPv4: v4, IPv6: v6,
		Ports:    slices.Clone(s.Ports),
		HostVeth: fmt.Sprintf("ext%d", idx),
		MAC:      podMAC(v4),
		External: true,
		NodeIPv4: gw4, NodeIPv6: gw6,
		node: n,
	}
	if len(p.Ports) == 0 {
		p.Ports = slices.Clone(n.opts.Ports)
	}
	if err := n.attachExternal(p, fmt.Sprintf("%sx%d", n.id, idx), s.IPv4, s.IPv6); err != nil {
		n.unreserve(p.Name, v4, v6)
		return nil, fmt.Errorf("netmodel: external %s: %w", s.Name, err)
	}
	if err := n.register(p); err != nil {
		return nil, err
	}
	return p, nil
}

// newPeerNS creates the namespace of a pod or peer with its servers running.
func (n *Node) newPeerNS(p *Pod, nsName string) error {
	ns, err := newNamedNS(nsName, func(h netns.NsHandle) error {
		for _, kv := range [][2]string{
			{"net.ipv6.conf.all.accept_dad", "0"},
			{"net.ipv6.conf.default.accept_dad", "0"},
		} {
			if err := writeSysctl(h, kv[0], kv[1]); err != nil {
				return err
			}
		}
		srv, err := startServers(p.Name, p.Ports)
		if err != nil {
			return err
		}
		p.srv = srv
		return nil
	})
	if err != nil {
		return err
	}
	p.NS = ns
	return nil
}

// addVeth creates the node-side veth with its peer "eth0" in p's namespace.
func (n *Node) addVeth(p *Pod) (host, peer netlink.Link, err error) {
	err = n.nl.LinkAdd(&netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: p.HostVeth, HardwareAddr: NodeVethMAC, MTU: 1500},
		PeerName:         "eth0",
		PeerHardwareAddr: p.MAC,
		PeerNamespace:    netlink.NsFd(p.Fd()),
		PeerMTU:          1500,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("veth %s: %w", p.HostVeth, err)
	}
	if host, err = n.nl.LinkByName(p.HostVeth); err != nil {
		return nil, nil, err
	}
	if peer, err = p.nl.LinkByName("eth0"); err != nil {
		return nil, nil, err
	}
	p.HostVethIndex = host.Attrs().Index
	return host, peer, nil
}

func (n *Node) attach(p *Pod) (err error) {
	if err := n.newPeerNS(p, p.nsName); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	host, eth0, err := n.addVeth(p)
	if err != nil {
		return err
	}
	hi, pi := host.Attrs().Index, eth0.Attrs().Index
	nodeNL, podNL := n.nl, p.nl

	// Node side: proxy_arp like Calico (the pod's neighbour entry for the gateway is
	// static, so it is not needed for traffic), /32 and /128 routes to the pod, static
	// neighbour entries for the pod.
	if err := n.Do(func() error {
		return writeSysctl(n.h, "net.ipv4.conf."+p.HostVeth+".proxy_arp", "1")
	}); err != nil {
		return err
	}
	steps := []func() error{
		func() error { return nodeNL.LinkSetUp(host) },
		func() error {
			return nodeNL.RouteAdd(&netlink.Route{LinkIndex: hi, Dst: hostPrefix(p.IPv4), Scope: netlink.SCOPE_LINK})
		},
		func() error { return nodeNL.RouteAdd(&netlink.Route{LinkIndex: hi, Dst: hostPrefix(p.IPv6)}) },
		func() error { return nodeNL.NeighSet(staticNeigh(hi, p.IPv4, p.MAC)) },
		func() error { return nodeNL.NeighSet(staticNeigh(hi, p.IPv6, p.MAC)) },
		// Pod side: eth0 with the /32 and /128, default routes via the link-local next hops.
		func() error { return podNL.AddrAdd(eth0, &netlink.Addr{IPNet: hostPrefix(p.IPv4)}) },
		func() error {
			return podNL.AddrAdd(eth0, &netlink.Addr{IPNet: hostPrefix(p.IPv6), Flags: unix.IFA_F_NODAD})
		},
		func() error { return podNL.LinkSetUp(eth0) },
		func() error { return podNL.NeighSet(staticNeigh(pi, GatewayV4, NodeVethMAC)) },
		func() error { return podNL.NeighSet(staticNeigh(pi, GatewayV6, NodeVethMAC)) },
		func() error {
			return podNL.RouteAdd(&netlink.Route{LinkIndex: pi, Dst: hostPrefix(GatewayV4), Scope: netlink.SCOPE_LINK})
		},
		func() error { return podNL.RouteAdd(&netlink.Route{LinkIndex: pi, Gw: GatewayV4.AsSlice()}) },
		func() error { return podNL.RouteAdd(&netlink.Route{LinkIndex: pi, Gw: GatewayV6.AsSlice()}) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("setup step %d: %w", i, err)
		}
	}
	return waitReady(nodeNL, hi, podNL, pi)
}

func (n *Node) attachExternal(p *Pod, nsName string, v4, v6 netip.Prefix) (err error) {
	if err := n.newPeerNS(p, nsName); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	host, eth0, err := n.addVeth(p)
	if err != nil {
		return err
	}
	hi, pi := host.Attrs().Index, eth0.Attrs().Index
	nodeNL, peerNL := n.nl, p.nl
	gw4 := netip.PrefixFrom(p.NodeIPv4, v4.Bits())
	gw6 := netip.PrefixFrom(p.NodeIPv6, v6.Bits())
	steps := []func() error{
		func() error { return nodeNL.AddrAdd(host, &netlink.Addr{IPNet: ipnet(gw4)}) },
		func() error { return nodeNL.AddrAdd(host, &netlink.Addr{IPNet: ipnet(gw6), Flags: unix.IFA_F_NODAD}) },
		func() error { return nodeNL.NeighSet(staticNeigh(hi, p.IPv4, p.MAC)) },
		func() error { return nodeNL.NeighSet(staticNeigh(hi, p.IPv6, p.MAC)) },
		func() error { return nodeNL.LinkSetUp(host) },
		func() error { return peerNL.AddrAdd(eth0, &netlink.Addr{IPNet: ipnet(v4)}) },
		func() error { return peerNL.AddrAdd(eth0, &netlink.Addr{IPNet: ipnet(v6), Flags: unix.IFA_F_NODAD}) },
		func() error { return peerNL.NeighSet(staticNeigh(pi, p.NodeIPv4, NodeVethMAC)) },
		func() error { return peerNL.NeighSet(staticNeigh(pi, p.NodeIPv6, NodeVethMAC)) },
		func() error { return peerNL.LinkSetUp(eth0) },
		func() error { return peerNL.RouteAdd(&netlink.Route{LinkIndex: pi, Gw: p.NodeIPv4.AsSlice()}) },
		func() error { return peerNL.RouteAdd(&netlink.Route{LinkIndex: pi, Gw: p.NodeIPv6.AsSlice()}) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("setup step %d: %w", i, err)
		}
	}
	return waitReady(nodeNL, hi, peerNL, pi)
}

func staticNeigh(link int, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	return &netlink.Neigh{LinkIndex: link, Family: fam, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
}

// close stops the pod's servers and connections and removes its namespace (the kernel
// then deletes its veth pair).
func (p *Pod) close() error {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	if p.srv != nil {
		p.srv.close()
		p.srv = nil
	}
	return p.NS.close()
}

// Close stops every server and connection and removes all namespaces of the node (pods,
// external peers, then the node). It is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	pods := n.pods
	n.pods = nil
	n.mu.Unlock()
	var errs []error
	for _, p := range pods {
		errs = append(errs, p.close())
	}
	errs = append(errs, n.NS.close())
	return errors.Join(errs...)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// waitReady waits until both ends of a veth are operationally up (the kernel attaches
// the real qdisc in the same step; until then packets are dropped) and none of their
// IPv6 addresses is tentative any more (even without DAD the address becomes usable only
// when the kernel's address work has run; until then packets to it are dropped).
func waitReady(nodeNL *netlink.Handle, hi int, peerNL *netlink.Handle, pi int) error {
	deadline := time.Now().Add(5 * time.Second)
	for _, end := range []struct {
		nl  *netlink.Handle
		idx int
	}{{nodeNL, hi}, {peerNL, pi}} {
		for {
			l, err := end.nl.LinkByIndex(end.idx)
			if err != nil {
				return err
			}
			ready := l.Attrs().OperState == netlink.OperUp
			if ready {
				addrs, err := end.nl.AddrList(l, netlink.FAMILY_V6)
				if err != nil {
					return err
				}
				for _, a := range addrs {
					if a.Flags&unix.IFA_F_TENTATIVE != 0 {
						ready = false
					}
				}
			}
			if ready {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("link %s not ready (oper state %v or tentative IPv6 address)", l.Attrs().Name, l.Attrs().OperState)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
