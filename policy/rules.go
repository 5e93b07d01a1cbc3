package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/egressd/egressd/policy/domain"
)

// PolicyRef identifies a policy of any kind.
type PolicyRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String returns "Kind/name" or "Kind/namespace/name".
func (r PolicyRef) String() string {
	if r.Kind == "" {
		return ""
	}
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// comparePolicyRefs orders references like their String forms, without
// building the strings.
func comparePolicyRefs(a, b PolicyRef) int {
	if a.Kind == b.Kind && a.Namespace == b.Namespace && a.Kind != "" {
		// Equal up to the name: the joined forms compare as the names.
		return strings.Compare(a.Name, b.Name)
	}
	pa, pb := a.parts(), b.parts()
	return compareJoined(pa[:], pb[:])
}

// compareRuleRefs orders rule references like their String forms, without
// building the strings.
func compareRuleRefs(a, b RuleRef) int {
	pa, pb := a.Policy.parts(), b.Policy.parts()
	qa := [7]string{pa[0], pa[1], pa[2], pa[3], pa[4], "#", a.Rule}
	qb := [7]string{pb[0], pb[1], pb[2], pb[3], pb[4], "#", b.Rule}
	return compareJoined(qa[:], qb[:])
}

// compareJoined compares the concatenations of pa and pb byte by byte.
func compareJoined(pa, pb []string) int {
	i, j, x, y := 0, 0, 0, 0
	for {
		for i < len(pa) && x == len(pa[i]) {
			i, x = i+1, 0
		}
		for j < len(pb) && y == len(pb[j]) {
			j, y = j+1, 0
		}
		switch {
		case i == len(pa) && j == len(pb):
			return 0
		case i == len(pa):
			return -1
		case j == len(pb):
			return 1
		}
		if ca, cb := pa[i][x], pb[j][y]; ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
		x, y = x+1, y+1
	}
}

// parts returns the pieces of String().
func (r PolicyRef) parts() [5]string {
	if r.Kind == "" {
		return [5]string{}
	}
	if r.Namespace == "" {
		return [5]string{r.Kind, "/", r.Name}
	}
	return [5]string{r.Kind, "/", r.Namespace, "/", r.Name}
}

// RuleRef identifies one rule of one policy.
type RuleRef struct {
	Policy PolicyRef
	// Rule is the rule's name, or its position such as "egress[0]".
	Rule string
}

// String returns "policy#rule".
func (r RuleRef) String() string { return r.Policy.String() + "#" + r.Rule }

// dirIndex maps a direction to an array index.
func dirIndex(d Direction) int {
	if d == Ingress {
		return 0
	}
	return 1
}

// Directions lists both directions in a fixed order.
var Directions = [...]Direction{Ingress, Egress}

// compiledPolicy is the validated, evaluation-ready form of any policy kind.
type compiledPolicy struct {
	ref      PolicyRef
	tier     Tier
	priority int32
	audit    bool
	lookups  LookupMode
	// tunnel is spec.tunnelDetection ("" when unset).
	tunnel TunnelDetection
	// dnsBypass is spec.dnsBypass (ClusterFirewallPolicy; nil when unset).
	dnsBypass *compiledDNSBypass
	// namespace restricts the subject to one namespace (namespaced kinds).
	namespace string
	// nsSel selects the subject's namespaces (cluster kind); nil with namespace set.
	nsSel labels.Selector
	// podSel selects the subject's pods; labels.Everything() when omitted.
	podSel labels.Selector
	// isolates is true for a direction the policy isolates (namespaced tier).
	isolates [2]bool
	rules    [2][]*compiledRule
	// cnp is true for a ClusterNetworkPolicy (Pass is valid in the Baseline
	// tier too); nodePeers when some rule has a nodes peer (recompiled when
	// nodes change).
	cnp, nodePeers bool
	// retired is set (under the store's write lock) when the store replaced
	// or deleted the policy: an FQDN index built before still lists it.
	retired bool
}

// selects reports whether the policy applies to the workload.
func (p *compiledPolicy) selects(w *Workload, ns *Namespace) bool {
	if p.namespace != "" {
		if w.Namespace != p.namespace {
			return false
		}
	} else if !p.nsSel.Matches(labels.Set(ns.Labels)) {
		return false
	}
	return p.podSel.Matches(labels.Set(w.Labels))
}

type peerKind uint8

const (
	peerPods peerKind = iota + 1
	peerNamespaces
	peerCIDR
	peerFQDN
	// peerNodes selects the addresses of nodes by label (ClusterNetworkPolicy).
	peerNodes
)

// compiledPeer is one validated peer.
type compiledPeer struct {
	kind peerKind
	// namespace fixes the peer's namespace (pods peer of a namespaced policy
	// without namespaceSelector); otherwise nsSel selects namespaces.
	namespace string
	nsSel     labels.Selector
	podSel    labels.Selector
	// nodeSel selects nodes (peerNodes).
	nodeSel labels.Selector
	// prefixes is the CIDR minus its excepts, as disjoint prefixes.
	prefixes []netip.Prefix
	pattern  domain.Pattern
}

// matchesWorkload reports whether a pods or namespaces peer selects w.
func (p *compiledPeer) matchesWorkload(w *Workload, ns *Namespace) bool {
	switch p.kind {
	case peerPods:
		if p.namespace != "" {
			if w.Namespace != p.namespace {
				return false
			}
		} else if !p.nsSel.Matches(labels.Set(ns.Labels)) {
			return false
		}
		return p.podSel.Matches(labels.Set(w.Labels))
	case peerNamespaces:
		return p.nsSel.Matches(labels.Set(ns.Labels))
	}
	return false
}

// matchesIP reports whether a CIDR peer contains ip.
func (p *compiledPeer) matchesIP(ip netip.Addr) bool {
	if p.kind != peerCIDR {
		return false
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// compiledPort is one validated port rule.
type compiledPort struct {
	protocol Protocol
	// all matches every port of the protocol.
	all bool
	// first and last bound a numeric range (first == last for one port).
	first, last int32
	// name is a named port, resolved on the destination workload.
	name string
}

func (p compiledPort) String() string {
	switch {
	case p.all:
		return string(p.protocol)
	case p.name != "":
		return fmt.Sprintf("%s/%s", p.protocol, p.name)
	case p.first == p.last:
		return fmt.Sprintf("%s/%d", p.protocol, p.first)
	}
	return fmt.Sprintf("%s/%d-%d", p.protocol, p.first, p.last)
}

// compiledRule is one validated rule.
type compiledRule struct {
	policy    *compiledPolicy
	direction Direction
	index     int
	name      string
	action    Action
	// anyPeer is true when the rule lists no peers.
	anyPeer bool
	peers   []compiledPeer
	// anyPort is true when the rule lists no ports.
	anyPort bool
	ports   []compiledPort
	// hasFQDN is true when some peer is an FQDN peer.
	hasFQDN bool
	// failClosed is set when a ClusterNetworkPolicy rule had a peer or a
	// protocol with no known field and was made a "Deny all" rule.
	failClosed bool
}

// ref returns the rule's reference.
func (r *compiledRule) ref() RuleRef { return RuleRef{Policy: r.policy.ref, Rule: r.name} }
