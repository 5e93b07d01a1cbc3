package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// NamespaceNameLabel is the label every namespace carries with its own name.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// Namespace is a namespace with its labels.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// NamedPort is a named container port of a workload.
type NamedPort struct {
	Name     string   `json:"name"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// Workload is a pod (or a standalone process group) with its addresses.
type Workload struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	IPs       []netip.Addr      `json:"ips,omitempty"`
	Ports     []NamedPort       `json:"ports,omitempty"`
	// Node is the node the workload runs on; empty in standalone mode.
	Node string `json:"node,omitempty"`
}

// Key returns "namespace/name".
func (w *Workload) Key() WorkloadKey { return WorkloadKey{w.Namespace, w.Name} }

// WorkloadKey identifies a workload.
type WorkloadKey struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (k WorkloadKey) String() string {
	if k.Namespace == "" && k.Name == "" {
		return ""
	}
	return k.Namespace + "/" + k.Name
}

// ParseWorkloadKey parses "namespace/name".
func ParseWorkloadKey(s string) (WorkloadKey, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return WorkloadKey{}, fmt.Errorf("workload %q: want namespace/name", s)
	}
	return WorkloadKey{ns, name}, nil
}

// namedPort resolves a port name of the workload for a protocol.
func (w *Workload) namedPort(name string, proto Protocol) (int32, bool) {
	for _, p := range w.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = ProtocolTCP
		}
		if p.Name == name && pp == proto {
			return p.Port, true
		}
	}
	return 0, false
}

// Node is a node with its labels and addresses: what a ClusterNetworkPolicy
// nodes peer selects (Node.status.addresses in Kubernetes, the nodes list of
// the workloads file in standalone mode).
type Node struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	IPs    []netip.Addr      `json:"ips,omitempty"`
}

// Workloads is the standalone workloads file (docs/design.md §3).
type Workloads struct {
	Namespaces []Namespace `json:"namespaces,omitempty"`
	Pods       []Workload  `json:"pods,omitempty"`
	// Nodes are the nodes ClusterNetworkPolicy nodes peers select.
	Nodes []Node `json:"nodes,omitempty"`
}
