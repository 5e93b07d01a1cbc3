package policy

import (
	"fmt"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateNetworkPolicy checks a Kubernetes NetworkPolicy with the same rules as
// the API server plus what egressd needs; nil when valid.
func ValidateNetworkPolicy(np *networkingv1.NetworkPolicy) error {
	_, err := compileNetworkPolicy(np)
	return err
}

// compileNetworkPolicy adapts a networking.k8s.io/v1 NetworkPolicy: its rules are
// Allow rules of the namespaced tier; policyTypes defaults to Ingress, plus
// Egress when the spec has egress rules.
func compileNetworkPolicy(np *networkingv1.NetworkPolicy) (*compiledPolicy, error) {
	ref := PolicyRef{Kind: KindNetworkPolicy, Namespace: np.Namespace, Name: np.Name}
	var errs field.ErrorList
	errs = append(errs, validateName(field.NewPath("metadata"), np.Name, true, np.Namespace)...)
	spec := field.NewPath("spec")
	cp := &compiledPolicy{ref: ref, tier: TierNamespaced, namespace: np.Namespace, lookups: LookupsObserve}
	var e field.ErrorList
	cp.podSel, e = compileSelector(spec.Child("podSelector"), &np.Spec.PodSelector)
	errs = append(errs, e...)

	types := np.Spec.PolicyTypes
	if len(types) == 0 {
		types = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(np.Spec.Egress) > 0 {
			types = append(types, networkingv1.PolicyTypeEgress)
		}
	}
	for i, t := range types {
		switch t {
		case networkingv1.PolicyTypeIngress:
			cp.isolates[dirIndex(Ingress)] = true
		case networkingv1.PolicyTypeEgress:
			cp.isolates[dirIndex(Egress)] = true
		default:
			errs = append(errs, field.NotSupported(spec.Child("policyTypes").Index(i), t, []string{"Ingress", "Egress"}))
		}
	}
	// Rules of a direction the policy does not isolate have no effect.
	if cp.isolates[dirIndex(Ingress)] {
		for i, r := range np.Spec.Ingress {
			cr, e := compileNetpolRule(cp, spec.Child("ingress").Index(i), Ingress, i, r.From, r.Ports)
			errs = append(errs, e...)
			cp.rules[dirIndex(Ingress)] = append(cp.rules[dirIndex(Ingress)], cr)
		}
	}
	if cp.isolates[dirIndex(Egress)] {
		for i, r := range np.Spec.Egress {
			cr, e := compileNetpolRule(cp, spec.Child("egress").Index(i), Egress, i, r.To, r.Ports)
			errs = append(errs, e...)
			cp.rules[dirIndex(Egress)] = append(cp.rules[dirIndex(Egress)], cr)
		}
	}
	if err := asError(ref, errs); err != nil {
		return nil, err
	}
	return cp, nil
}

func compileNetpolRule(cp *compiledPolicy, path *field.Path, dir Direction, index int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (*compiledRule, field.ErrorList) {
	cr := &compiledRule{
		policy: cp, direction: dir, index: index, action: ActionAllow,
		name:    fmt.Sprintf("%s[%d]", strings.ToLower(string(dir)), index),
		anyPeer: len(peers) == 0, anyPort: len(ports) == 0,
	}
	var errs field.ErrorList
	peersPath := path.Child("from")
	if dir == Egress {
		peersPath = path.Child("to")
	}
	for i, p := range peers {
		pp := peersPath.Index(i)
		switch {
		case p.IPBlock != nil:
			if p.PodSelector != nil || p.NamespaceSelector != nil {
				errs = append(errs, field.Forbidden(pp, "ipBlock may not be combined with podSelector or namespaceSelector"))
				continue
			}
			prefixes, e := compileCIDR(pp.Child("ipBlock"), p.IPBlock.CIDR, p.IPBlock.Except)
			errs = append(errs, e...)
			cr.peers = append(cr.peers, compiledPeer{kind: peerCIDR, prefixes: prefixes})
		case p.PodSelector != nil:
			out := compiledPeer{kind: peerPods}
			var e field.ErrorList
			out.podSel, e = compileSelector(pp.Child("podSelector"), p.PodSelector)
			errs = append(errs, e...)
			if p.NamespaceSelector != nil {
				out.nsSel, e = compileSelector(pp.Child("namespaceSelector"), p.NamespaceSelector)
				errs = append(errs, e...)
			} else {
				out.namespace = cp.namespace
			}
			cr.peers = append(cr.peers, out)
		case p.NamespaceSelector != nil:
			out := compiledPeer{kind: peerNamespaces}
			var e field.ErrorList
			out.nsSel, e = compileSelector(pp.Child("namespaceSelector"), p.NamespaceSelector)
			errs = append(errs, e...)
			cr.peers = append(cr.peers, out)
		default:
			errs = append(errs, field.Required(pp, "must specify a peer (podSelector, namespaceSelector or ipBlock)"))
		}
	}
	for i, p := range ports {
		pr := PortRule{Port: p.Port, EndPort: p.EndPort}
		if p.Protocol != nil {
			pr.Protocol = Protocol(*p.Protocol)
		}
		port, e := compilePort(path.Child("ports").Index(i), pr)
		errs = append(errs, e...)
		cr.ports = append(cr.ports, port)
	}
	return cr, errs
}
