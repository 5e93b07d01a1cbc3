// Package scenarios is the Kubernetes upstream e2e NetworkPolicy model as data:
// three namespaces x, y and z with pods a, b and c each, serving ports 80 and 81
// on TCP, UDP and SCTP, and a list of Scenarios — policies as users write them
// (YAML), optional hosts outside the cluster, optional recorded DNS lookups, and
// the expected reachability as truth tables like the upstream suite prints them.
//
// The same data drives two checks: the reference evaluator (policy.Engine) must
// produce every expected table cell by cell (this package's tests), and the kernel
// dataplane must agree with the engine and with the tables (the dataplane
// conformance test). Random(seed) produces further policy sets whose expected
// tables are computed by the engine, for kernel-versus-engine checks.
//
// Loopback: a workload can always reach itself (policy.Engine.Decide allows
// it, as Kubernetes NetworkPolicy implementations do: a pod's traffic to its own
// address never leaves the pod), so the diagonal of every table is allowed.
// WithoutLoopback drops those cells for checks that cannot probe them.
package scenarios

import (
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/policy"
)

// Namespaces of the model, in table order.
var Namespaces = []string{"x", "y", "z"}

// PodNames are the pods of every namespace, in table order.
var PodNames = []string{"a", "b", "c"}

// Ports every pod serves.
var Ports = []int32{80, 81}

// Protocols every pod serves.
var Protocols = []policy.Protocol{policy.ProtocolTCP, policy.ProtocolUDP, policy.ProtocolSCTP}

// Family is an address family of a probe.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Families lists both families.
var Families = []Family{IPv4, IPv6}

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// PodIPv4 returns the IPv4 address of pod "ns/name" of the model:
// 10.244.<namespace index>.<pod index>, counting from 1 (x/a is 10.244.1.1).
func PodIPv4(ns, pod string) netip.Addr {
	i, j := nsIndex(ns), podIndex(pod)
	return netip.AddrFrom4([4]byte{10, 244, byte(i), byte(j)})
}

// PodIPv6 returns the IPv6 address of a pod of the model:
// fd00:244::<namespace index>:<pod index> (x/a is fd00:244::1:1).
func PodIPv6(ns, pod string) netip.Addr {
	i, j := nsIndex(ns), podIndex(pod)
	return netip.MustParseAddr(fmt.Sprintf("fd00:244::%x:%x", i, j))
}

func nsIndex(ns string) int {
	for i, n := range Namespaces {
		if n == ns {
			return i + 1
		}
	}
	panic("scenarios: unknown namespace " + ns)
}

func podIndex(pod string) int {
	for i, n := range PodNames {
		if n == pod {
			return i + 1
		}
	}
	panic("scenarios: unknown pod " + pod)
}

// PodCIDRv4 and PodCIDRv6 hold every pod address of the model.
var (
	PodCIDRv4 = netip.MustParsePrefix("10.244.0.0/16")
	PodCIDRv6 = netip.MustParsePrefix("fd00:244::/64")
)

// NamespaceCIDRv4 returns the /24 holding the IPv4 addresses of a namespace's pods.
func NamespaceCIDRv4(ns string) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(nsIndex(ns)), 0}), 24)
}

// NamespaceCIDRv6 returns the /112 holding the IPv6 addresses of a namespace's pods.
func NamespaceCIDRv6(ns string) netip.Prefix {
	return netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("fd00:244::%x:0", nsIndex(ns))), 112)
}

// NamedPorts are the container ports of every pod, named like the upstream model:
// serve-80-tcp, serve-80-udp, serve-80-sctp, serve-81-tcp, ...
func NamedPorts() []policy.NamedPort {
	var out []policy.NamedPort
	for _, port := range Ports {
		for _, proto := range Protocols {
			out = append(out, policy.NamedPort{Name: PortName(port, proto), Port: port, Protocol: proto})
		}
	}
	return out
}

// PortName returns the upstream name of a container port, e.g. "serve-80-tcp".
func PortName(port int32, proto policy.Protocol) string {
	p := map[policy.Protocol]string{policy.ProtocolTCP: "tcp", policy.ProtocolUDP: "udp", policy.ProtocolSCTP: "sctp"}[proto]
	return fmt.Sprintf("serve-%d-%s", port, p)
}

// PodKeys returns "x/a" … "z/c" in table order.
func PodKeys() []string {
	var out []string
	for _, ns := range Namespaces {
		for _, p := range PodNames {
			out = append(out, ns+"/"+p)
		}
	}
	return out
}

// Workloads returns the model's namespaces (labels ns=<name>; the store adds
// kubernetes.io/metadata.name) and pods (label pod=<name>, both addresses, the
// named ports).
func Workloads() *policy.Workloads {
	ws := &policy.Workloads{}
	for _, ns := range Namespaces {
		ws.Namespaces = append(ws.Namespaces, policy.Namespace{Name: ns, Labels: map[string]string{"ns": ns, policy.NamespaceNameLabel: ns}})
		for _, p := range PodNames {
			ws.Pods = append(ws.Pods, policy.Workload{
				Namespace: ns,
				Name:      p,
				Labels:    map[string]string{"pod": p},
				IPs:       []netip.Addr{PodIPv4(ns, p), PodIPv6(ns, p)},
				Ports:     NamedPorts(),
			})
		}
	}
	return ws
}

// External is a host outside the cluster (not a workload): it appears as an extra
// row and column of a scenario's tables.
type External struct {
	Name       string
	IPv4, IPv6 netip.Addr
}

// DefaultExternal is the external peer of the dataplane test network.
var DefaultExternal = External{Name: "external", IPv4: netip.MustParseAddr("192.0.2.10"), IPv6: netip.MustParseAddr("2001:db8::10")}

// Addr returns the address of the family.
func (x External) Addr(f Family) netip.Addr {
	if f == IPv6 {
		return x.IPv6
	}
	return x.IPv4
}

// Endpoint is a row/column of a table: a pod of the model or an external host.
type Endpoint struct {
	// Name is "x/a" for pods, the external's name otherwise.
	Name       string
	IPv4, IPv6 netip.Addr
}

// Addr returns the address of the family.
func (e Endpoint) Addr(f Family) netip.Addr {
	if f == IPv6 {
		return e.IPv6
	}
	return e.IPv4
}

// Endpoints returns the model's pods followed by the externals, in table order.
func Endpoints(externals ...External) []Endpoint {
	var out []Endpoint
	for _, ns := range Namespaces {
		for _, p := range PodNames {
			out = append(out, Endpoint{Name: ns + "/" + p, IPv4: PodIPv4(ns, p), IPv6: PodIPv6(ns, p)})
		}
	}
	for _, x := range externals {
		out = append(out, Endpoint(x))
	}
	return out
}
