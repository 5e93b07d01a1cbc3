// Package netmodel is the pod network model of the end-to-end and dataplane-conformance
// tests: a cluster node, pods and external hosts as network namespaces wired like
// Calico's routed model, TCP/UDP servers in every pod, and a prober that opens real
// connections from inside pods and prints truth tables like the Kubernetes e2e
// network-policy suite. It needs root; it never touches the host network namespace.
//
// # Topology
//
//	pod ns "…-p0" (x/a)                     node ns "…-node"                      external ns "…-x0"
//	eth0 10.244.0.2/32  ──veth──  cali0 (ee:ee:ee:ee:ee:ee, proxy_arp)
//	     fd00:244::2/128          route 10.244.0.2/32, fd00:244::2/128 dev cali0
//	default via 169.254.1.1       ip_forward=1, ipv6 forwarding=1
//	default via fe80::ecee:eeff:feee:eeee   ext0 192.0.2.1/24 ──veth── eth0 192.0.2.10/24
//	                                             2001:db8::1/64          2001:db8::10/64
//	                                                                     default via the node
//
// Pod-to-pod and pod-to-external traffic is forwarded by the node namespace, so the
// node's nftables forward hook sees it (prerouting/forward/postrouting; input/output only
// for traffic to/from the node's own addresses, e.g. a node-local resolver on lo that
// pods reach through their default route). Traffic of a pod to its own address never
// leaves the pod's namespace (local route over the pod's loopback): the node cannot see,
// count or drop it, so Matrix cells from a pod to itself are always allowed, as
// Kubernetes NetworkPolicy implementations also allow them in practice.
//
// The pods' neighbour entries for the gateway and the node's entries for the pods are
// static (no ARP/ND at probe time); proxy_arp is on for parity with Calico. IPv6 DAD is
// off in every namespace, so addresses are usable immediately.
//
// # Namespaces
//
// Every namespace is named "egt-<pid>-<node#>-{node,p<i>,x<i>}" and bind-mounted under
// /run/netns, so `ip netns exec NAME …` works. Node.Close (NewTestNode registers it with
// t.Cleanup) removes them; CleanupStale removes those of dead processes.
//
// To program nftables in the node namespace with google/nftables:
//
//	conn, err := nftables.New(nftables.WithNetNSFd(node.Fd()))
//
// with vishvananda/netlink: node.Netlink() (or netlink.NewHandleAt(node.NsHandle()));
// with a CLI: node.Exec(ctx, ruleset, "nft", "-f", "-") or
// `ip netns exec <node.NetNSName()> nft …`; any other code: node.Do(func() error {…}).
//
// # Servers
//
// Every pod serves each of its ports on TCP and UDP, IPv4 and IPv6. TCP writes
// "<pod>:<port>\n" on accept, then echoes; UDP answers each datagram with
// "<pod>:<port>\n" followed by the datagram.
package netmodel
