// Package cnpconvert converts between upstream's ClusterNetworkPolicy
// (sigs.k8s.io/network-policy-api v0.3.0) and egressd's
// ClusterFirewallPolicy, keeping the meaning: what one kind cannot express is
// refused with the field and the reason, never approximated. Pure: no I/O.
package cnpconvert

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/egressd/egressd/policy"
)

// Problem is one thing that cannot be converted.
type Problem struct {
	Field, Reason string
}

func (p Problem) String() string { return p.Field + ": " + p.Reason }

// ToClusterFirewallPolicy converts a ClusterNetworkPolicy. nodes peers and a
// Pass in the Baseline tier have no ClusterFirewallPolicy equivalent.
func ToClusterFirewallPolicy(in *cnpv1alpha2.ClusterNetworkPolicy) (*policy.ClusterFirewallPolicy, []Problem) {
	var probs []Problem
	out := &policy.ClusterFirewallPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindClusterFirewallPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: in.Name, Labels: in.Labels},
	}
	out.Spec.Tier = policy.Tier(in.Spec.Tier)
	out.Spec.Priority = in.Spec.Priority
	switch s := in.Spec.Subject; {
	case s.Namespaces != nil:
		out.Spec.Subject.NamespaceSelector = *s.Namespaces.DeepCopy()
	case s.Pods != nil:
		out.Spec.Subject.NamespaceSelector = *s.Pods.NamespaceSelector.DeepCopy()
		out.Spec.Subject.PodSelector = s.Pods.PodSelector.DeepCopy()
	}
	conv := func(dir, name string, i int, action cnpv1alpha2.ClusterNetworkPolicyRuleAction, peers []cnpv1alpha2.ClusterNetworkPolicyEgressPeer, protos []cnpv1alpha2.ClusterNetworkPolicyProtocol) policy.Rule {
		path := fmt.Sprintf("spec.%s[%d]", dir, i)
		r := policy.Rule{Name: ruleName(name)}
		switch action {
		case cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept:
			r.Action = policy.ActionAllow
		case cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny:
			r.Action = policy.ActionDeny
		default:
			r.Action = policy.ActionPass
			if in.Spec.Tier == cnpv1alpha2.BaselineTier {
				probs = append(probs, Problem{path + ".action", "Pass in the Baseline tier (the node default decides) has no ClusterFirewallPolicy equivalent"})
			}
		}
		if name != "" && name != r.Name {
			probs = append(probs, Problem{path + ".name", fmt.Sprintf("%q is not a DNS label (egressd rule names are)", name)})
		}
		var ps []policy.Peer
		for j, p := range peers {
			pp := fmt.Sprintf("%s.%s[%d]", path, map[string]string{"egress": "to", "ingress": "from"}[dir], j)
			switch {
			case p.Namespaces != nil:
				ps = append(ps, policy.Peer{Namespaces: p.Namespaces.DeepCopy()})
			case p.Pods != nil:
				ns := p.Pods.NamespaceSelector.DeepCopy()
				ps = append(ps, policy.Peer{Pods: &policy.PodsPeer{PodSelector: *p.Pods.PodSelector.DeepCopy(), NamespaceSelector: ns}})
			case p.Networks != nil:
				for _, c := range p.Networks {
					ps = append(ps, policy.Peer{CIDR: string(c)})
				}
			case p.DomainNames != nil:
				for _, d := range p.DomainNames {
					ps = append(ps, fqdnPeer(string(d)))
				}
			case p.Nodes != nil:
				probs = append(probs, Problem{pp + ".nodes", "nodes peers have no ClusterFirewallPolicy equivalent"})
			default:
				probs = append(probs, Problem{pp, "a peer with no known field"})
			}
		}
		if dir == "egress" {
			r.To = ps
		} else {
			r.From = ps
		}
		for j, pr := range protos {
			pp := fmt.Sprintf("%s.protocols[%d]", path, j)
			switch {
			case pr.DestinationNamedPort != "":
				// The container port's protocol decides; one entry per protocol
				// matches exactly the same.
				for _, proto := range policy.Protocols {
					name := intstr.FromString(pr.DestinationNamedPort)
					r.Ports = append(r.Ports, policy.PortRule{Port: &name, Protocol: proto})
				}
			case pr.TCP != nil:
				r.Ports = append(r.Ports, portRule(policy.ProtocolTCP, pr.TCP.DestinationPort))
			case pr.UDP != nil:
				r.Ports = append(r.Ports, portRule(policy.ProtocolUDP, pr.UDP.DestinationPort))
			case pr.SCTP != nil:
				r.Ports = append(r.Ports, portRule(policy.ProtocolSCTP, pr.SCTP.DestinationPort))
			default:
				probs = append(probs, Problem{pp, "a protocol with no known field"})
			}
		}
		return r
	}
	for i, r := range in.Spec.Ingress {
		peers := make([]cnpv1alpha2.ClusterNetworkPolicyEgressPeer, len(r.From))
		for j, f := range r.From {
			peers[j] = cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: f.Namespaces, Pods: f.Pods}
		}
		out.Spec.Ingress = append(out.Spec.Ingress, conv("ingress", r.Name, i, r.Action, peers, r.Protocols))
	}
	for i, r := range in.Spec.Egress {
		out.Spec.Egress = append(out.Spec.Egress, conv("egress", r.Name, i, r.Action, r.To, r.Protocols))
	}
	return out, probs
}

// ruleName keeps a rule name that is a DNS label (egressd's rule names are).
func ruleName(n string) string {
	if n == "" || len(n) > 63 {
		return ""
	}
	for i, c := range n {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(n)-1
		if !ok {
			return ""
		}
	}
	return n
}

func fqdnPeer(d string) policy.Peer {
	if rest, ok := strings.CutPrefix(d, "*."); ok {
		return policy.Peer{FQDN: &policy.FQDNPeer{MatchPattern: "**." + rest}}
	}
	return policy.Peer{FQDN: &policy.FQDNPeer{MatchName: d}}
}

func portRule(proto policy.Protocol, p *cnpv1alpha2.Port) policy.PortRule {
	out := policy.PortRule{Protocol: proto}
	switch {
	case p == nil:
	case p.Range != nil:
		start := intstr.FromInt32(p.Range.Start)
		end := p.Range.End
		out.Port, out.EndPort = &start, &end
	default:
		n := intstr.FromInt32(p.Number)
		out.Port = &n
	}
	return out
}

// ToClusterNetworkPolicy converts a ClusterFirewallPolicy; it refuses what
// ClusterNetworkPolicy cannot express: Audit mode, tunnelDetection,
// dnsBypass, FQDN peers outside Allow rules, patterns other than an exact
// name or a leading "**.", CIDRs with except, a named port of one protocol,
// a pods peer without namespaceSelector... each with its field.
func ToClusterNetworkPolicy(in *policy.ClusterFirewallPolicy) (*cnpv1alpha2.ClusterNetworkPolicy, []Problem) {
	var probs []Problem
	out := &cnpv1alpha2.ClusterNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: policy.CNPAPIVersions[0], Kind: policy.KindClusterNetworkPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: in.Name, Labels: in.Labels},
	}
	out.Spec.Tier = cnpv1alpha2.Tier(in.Spec.Tier)
	out.Spec.Priority = in.Spec.Priority
	if in.Spec.Mode == policy.ModeAudit {
		probs = append(probs, Problem{"spec.mode", "Audit mode has no ClusterNetworkPolicy equivalent"})
	}
	if in.Spec.TunnelDetection != "" {
		probs = append(probs, Problem{"spec.tunnelDetection", "DNS tunnel detection has no ClusterNetworkPolicy equivalent"})
	}
	if in.Spec.DNSBypass != nil {
		probs = append(probs, Problem{"spec.dnsBypass", "DNS side doors have no ClusterNetworkPolicy equivalent"})
	}
	if in.Spec.Subject.PodSelector == nil {
		out.Spec.Subject.Namespaces = in.Spec.Subject.NamespaceSelector.DeepCopy()
	} else {
		out.Spec.Subject.Pods = &cnpv1alpha2.NamespacedPod{NamespaceSelector: *in.Spec.Subject.NamespaceSelector.DeepCopy(), PodSelector: *in.Spec.Subject.PodSelector.DeepCopy()}
	}
	conv := func(dir string, i int, r policy.Rule) (cnpv1alpha2.ClusterNetworkPolicyRuleAction, []cnpv1alpha2.ClusterNetworkPolicyEgressPeer, []cnpv1alpha2.ClusterNetworkPolicyProtocol) {
		path := fmt.Sprintf("spec.%s[%d]", dir, i)
		action := cnpv1alpha2.ClusterNetworkPolicyRuleAction(r.Action)
		if r.Action == policy.ActionAllow {
			action = cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept
		}
		peers, peerField := r.To, "to"
		if dir == "ingress" {
			peers, peerField = r.From, "from"
		}
		var out []cnpv1alpha2.ClusterNetworkPolicyEgressPeer
		if len(peers) == 0 {
			if dir == "ingress" {
				out = append(out, cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: &metav1.LabelSelector{}})
				probs = append(probs, Problem{path + ".from", "every source (no from) has no ClusterNetworkPolicy ingress equivalent (its peers are pods only)"})
			} else {
				out = append(out, cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Networks: []cnpv1alpha2.CIDR{"0.0.0.0/0", "::/0"}})
			}
		}
		var names []cnpv1alpha2.DomainName
		for j, p := range peers {
			pp := fmt.Sprintf("%s.%s[%d]", path, peerField, j)
			switch {
			case p.Namespaces != nil:
				out = append(out, cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: p.Namespaces.DeepCopy()})
			case p.Pods != nil:
				ns := metav1.LabelSelector{}
				if p.Pods.NamespaceSelector != nil {
					ns = *p.Pods.NamespaceSelector.DeepCopy()
				}
				out = append(out, cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Pods: &cnpv1alpha2.NamespacedPod{NamespaceSelector: ns, PodSelector: *p.Pods.PodSelector.DeepCopy()}})
			case p.CIDR != "":
				if len(p.Except) > 0 {
					probs = append(probs, Problem{pp + ".except", "ClusterNetworkPolicy networks have no except"})
				}
				if dir == "ingress" {
					probs = append(probs, Problem{pp + ".cidr", "ClusterNetworkPolicy ingress peers are pods and namespaces only"})
				}
				out = append(out, cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Networks: []cnpv1alpha2.CIDR{cnpv1alpha2.CIDR(p.CIDR)}})
			case p.FQDN != nil:
				if r.Action != policy.ActionAllow {
					probs = append(probs, Problem{pp + ".fqdn", "an FQDN " + string(r.Action) + " rule: ClusterNetworkPolicy domainNames are Accept only"})
					continue
				}
				d, ok := domainName(p.FQDN)
				if !ok {
					probs = append(probs, Problem{pp + ".fqdn", fmt.Sprintf("%q: ClusterNetworkPolicy domain names are exact or a leading \"*.\" (one or more labels, egressd's \"**.\"); a one-label or in-label \"*\" cannot be expressed", p.FQDN.MatchPattern)})
					continue
				}
				names = append(names, d)
			}
		}
		if len(names) > 0 {
			out = append(out, cnpv1alpha2.ClusterNetworkPolicyEgressPeer{DomainNames: names})
		}
		var protos []cnpv1alpha2.ClusterNetworkPolicyProtocol
		// A name listed for TCP, UDP and SCTP is destinationNamedPort (the
		// container port's protocol decides either way).
		named := map[string]map[policy.Protocol]bool{}
		for _, pr := range r.Ports {
			if pr.Port != nil && pr.Port.Type == intstr.String {
				proto := pr.Protocol
				if proto == "" {
					proto = policy.ProtocolTCP
				}
				if named[pr.Port.StrVal] == nil {
					named[pr.Port.StrVal] = map[policy.Protocol]bool{}
				}
				named[pr.Port.StrVal][proto] = true
			}
		}
		done := map[string]bool{}
		for j, pr := range r.Ports {
			if pr.Port != nil && pr.Port.Type == intstr.String && len(named[pr.Port.StrVal]) == len(policy.Protocols) {
				if !done[pr.Port.StrVal] {
					done[pr.Port.StrVal] = true
					protos = append(protos, cnpv1alpha2.ClusterNetworkPolicyProtocol{DestinationNamedPort: pr.Port.StrVal})
				}
				continue
			}
			pp := fmt.Sprintf("%s.ports[%d]", path, j)
			proto := pr.Protocol
			if proto == "" {
				proto = policy.ProtocolTCP
			}
			var port *cnpv1alpha2.Port
			switch {
			case pr.Port == nil:
				port = &cnpv1alpha2.Port{Range: &cnpv1alpha2.PortRange{Start: 1, End: 65535}}
			case pr.Port.Type == intstr.String:
				probs = append(probs, Problem{pp + ".port", "a named port of some protocols only: ClusterNetworkPolicy's destinationNamedPort takes the container port's protocol"})
				continue
			case pr.EndPort != nil && *pr.EndPort > pr.Port.IntVal:
				port = &cnpv1alpha2.Port{Range: &cnpv1alpha2.PortRange{Start: pr.Port.IntVal, End: *pr.EndPort}}
			default:
				port = &cnpv1alpha2.Port{Number: pr.Port.IntVal}
			}
			var p cnpv1alpha2.ClusterNetworkPolicyProtocol
			switch proto {
			case policy.ProtocolTCP:
				p.TCP = &cnpv1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: port}
			case policy.ProtocolUDP:
				p.UDP = &cnpv1alpha2.ClusterNetworkPolicyProtocolUDP{DestinationPort: port}
			default:
				p.SCTP = &cnpv1alpha2.ClusterNetworkPolicyProtocolSCTP{DestinationPort: port}
			}
			protos = append(protos, p)
		}
		return action, out, protos
	}
	for i, r := range in.Spec.Ingress {
		action, peers, protos := conv("ingress", i, r)
		from := make([]cnpv1alpha2.ClusterNetworkPolicyIngressPeer, len(peers))
		for j, p := range peers {
			from[j] = cnpv1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: p.Namespaces, Pods: p.Pods}
		}
		out.Spec.Ingress = append(out.Spec.Ingress, cnpv1alpha2.ClusterNetworkPolicyIngressRule{Name: r.Name, Action: action, From: from, Protocols: protos})
	}
	for i, r := range in.Spec.Egress {
		action, peers, protos := conv("egress", i, r)
		out.Spec.Egress = append(out.Spec.Egress, cnpv1alpha2.ClusterNetworkPolicyEgressRule{Name: r.Name, Action: action, To: peers, Protocols: protos})
	}
	return out, probs
}

// domainName is the ClusterNetworkPolicy DomainName of an FQDN peer with the
// same meaning, if there is one.
func domainName(f *policy.FQDNPeer) (cnpv1alpha2.DomainName, bool) {
	if f.MatchName != "" {
		return cnpv1alpha2.DomainName(f.MatchName), true
	}
	rest, ok := strings.CutPrefix(f.MatchPattern, "**.")
	if !ok || strings.Contains(rest, "*") {
		return "", false
	}
	return cnpv1alpha2.DomainName("*." + rest), true
}
