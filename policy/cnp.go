package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/egressd/egressd/policy/domain"
)

// KindClusterNetworkPolicy is the kind of sigs.k8s.io/network-policy-api's
// cluster-scoped policy (policy.networking.k8s.io, v1alpha2 and v1beta1).
const KindClusterNetworkPolicy = "ClusterNetworkPolicy"

// CNPGroup is the API group of ClusterNetworkPolicy.
const CNPGroup = "policy.networking.k8s.io"

// CNPAPIVersions are the apiVersions of ClusterNetworkPolicy egressd reads;
// their schemas are identical (network-policy-api v0.3.0 serves both, and
// stores v1beta1).
var CNPAPIVersions = []string{CNPGroup + "/v1alpha2", CNPGroup + "/v1beta1"}

// Limits of a ClusterNetworkPolicy, as its CRD sets them.
const (
	cnpMaxRules    = 25
	cnpMaxPeers    = 25
	cnpMaxItems    = 25
	cnpMaxRuleName = 100
)

// cnpDomainName is the CRD's pattern of a DomainName.
var cnpDomainName = regexp.MustCompile(`^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$`)

// ValidateClusterNetworkPolicy checks a ClusterNetworkPolicy as its upstream
// CRD (experimental channel, with its CEL rules) does, plus what egressd
// needs (domainNames only in Accept rules, as the API documents); every
// problem with its field path. A peer or protocol with no known field set is
// an error here (the CRD rejects it); the store instead applies upstream's
// fail-closed rule to such an object (see UpsertClusterNetworkPolicy).
func ValidateClusterNetworkPolicy(p *cnpv1alpha2.ClusterNetworkPolicy) error {
	_, err := compileClusterNetworkPolicy(p, true)
	return err
}

// CNPRuleName returns the name egressd gives rule i of a CNP direction in
// verdicts, logs and the kernel: the rule's name when it has one that no
// other rule of the direction shares (and that does not look like a
// position), else its position, e.g. "egress[2]".
func CNPRuleName(dir Direction, names []string, i int) string {
	pos := fmt.Sprintf("%s[%d]", strings.ToLower(string(dir)), i)
	n := names[i]
	if n == "" || positionName.MatchString(n) {
		return pos
	}
	for j, m := range names {
		if j != i && m == n {
			return pos
		}
	}
	return n
}

var positionName = regexp.MustCompile(`^(ingress|egress)\[[0-9]+\]$`)

// compileClusterNetworkPolicy translates a ClusterNetworkPolicy into the
// engine's model: a policy of the Admin or Baseline tier with its priority,
// rules in written order (first match), Accept as Allow. strict reports a
// peer or protocol with no known field set as an error; otherwise such a rule
// fails closed as upstream asks: an Accept rule's unknown peer (or protocol)
// matches nothing, a Deny or Pass rule with one becomes "Deny all".
func compileClusterNetworkPolicy(p *cnpv1alpha2.ClusterNetworkPolicy, strict bool) (*compiledPolicy, error) {
	ref := PolicyRef{Kind: KindClusterNetworkPolicy, Name: p.Name}
	var errs field.ErrorList
	errs = append(errs, validateName(field.NewPath("metadata"), p.Name, false, p.Namespace)...)
	spec := field.NewPath("spec")
	cp := &compiledPolicy{ref: ref, priority: p.Spec.Priority, lookups: LookupsObserve, cnp: true}
	switch p.Spec.Tier {
	case cnpv1alpha2.AdminTier:
		cp.tier = TierAdmin
	case cnpv1alpha2.BaselineTier:
		cp.tier = TierBaseline
	case "":
		errs = append(errs, field.Required(spec.Child("tier"), "Admin or Baseline"))
	default:
		errs = append(errs, field.NotSupported(spec.Child("tier"), p.Spec.Tier, []string{string(cnpv1alpha2.AdminTier), string(cnpv1alpha2.BaselineTier)}))
	}
	if p.Spec.Priority < 0 || p.Spec.Priority > MaxPriority {
		errs = append(errs, field.Invalid(spec.Child("priority"), p.Spec.Priority, fmt.Sprintf("must be between 0 and %d", MaxPriority)))
	}
	subj := spec.Child("subject")
	var e field.ErrorList
	switch s := p.Spec.Subject; {
	case s.Namespaces != nil && s.Pods != nil:
		errs = append(errs, field.Invalid(subj, "namespaces, pods", "set exactly one of namespaces or pods"))
	case s.Namespaces != nil:
		cp.nsSel, e = compileSelector(subj.Child("namespaces"), s.Namespaces)
		errs = append(errs, e...)
		cp.podSel = labels.Everything()
	case s.Pods != nil:
		cp.nsSel, e = compileSelector(subj.Child("pods", "namespaceSelector"), &s.Pods.NamespaceSelector)
		errs = append(errs, e...)
		cp.podSel, e = compileSelector(subj.Child("pods", "podSelector"), &s.Pods.PodSelector)
		errs = append(errs, e...)
	default:
		// No known field: the subject selects nothing (fail closed: an
		// unknown subject must not widen what the policy denies).
		if strict {
			errs = append(errs, field.Required(subj, "set exactly one of namespaces or pods"))
		}
		cp.nsSel, cp.podSel = labels.Nothing(), labels.Nothing()
	}
	if n := len(p.Spec.Ingress); n > cnpMaxRules {
		errs = append(errs, field.TooMany(spec.Child("ingress"), n, cnpMaxRules))
	}
	if n := len(p.Spec.Egress); n > cnpMaxRules {
		errs = append(errs, field.TooMany(spec.Child("egress"), n, cnpMaxRules))
	}
	names := make([]string, len(p.Spec.Ingress))
	for i, r := range p.Spec.Ingress {
		names[i] = r.Name
	}
	for i, r := range p.Spec.Ingress {
		peers := make([]cnpPeer, len(r.From))
		for j, f := range r.From {
			peers[j] = cnpPeer{namespaces: f.Namespaces, pods: f.Pods}
		}
		cr, e := compileCNPRule(cp, spec.Child("ingress").Index(i), Ingress, i, CNPRuleName(Ingress, names, i), r.Name, r.Action, peers, r.Protocols, strict)
		errs = append(errs, e...)
		cp.rules[dirIndex(Ingress)] = append(cp.rules[dirIndex(Ingress)], cr)
	}
	names = make([]string, len(p.Spec.Egress))
	for i, r := range p.Spec.Egress {
		names[i] = r.Name
	}
	for i, r := range p.Spec.Egress {
		peers := make([]cnpPeer, len(r.To))
		for j, t := range r.To {
			peers[j] = cnpPeer{namespaces: t.Namespaces, pods: t.Pods, nodes: t.Nodes, networks: t.Networks, domainNames: t.DomainNames}
		}
		cr, e := compileCNPRule(cp, spec.Child("egress").Index(i), Egress, i, CNPRuleName(Egress, names, i), r.Name, r.Action, peers, r.Protocols, strict)
		errs = append(errs, e...)
		cp.rules[dirIndex(Egress)] = append(cp.rules[dirIndex(Egress)], cr)
	}
	if err := asError(ref, errs); err != nil {
		return nil, err
	}
	return cp, nil
}

// cnpPeer is an ingress or egress peer of a CNP (ingress peers have only
// namespaces and pods).
type cnpPeer struct {
	namespaces  *metav1.LabelSelector
	pods        *cnpv1alpha2.NamespacedPod
	nodes       *metav1.LabelSelector
	networks    []cnpv1alpha2.CIDR
	domainNames []cnpv1alpha2.DomainName
}

func (p *cnpPeer) fields() []string {
	var set []string
	if p.namespaces != nil {
		set = append(set, "namespaces")
	}
	if p.pods != nil {
		set = append(set, "pods")
	}
	if p.nodes != nil {
		set = append(set, "nodes")
	}
	if p.networks != nil {
		set = append(set, "networks")
	}
	if p.domainNames != nil {
		set = append(set, "domainNames")
	}
	return set
}

func compileCNPRule(cp *compiledPolicy, path *field.Path, dir Direction, index int, name, written string, action cnpv1alpha2.ClusterNetworkPolicyRuleAction, peers []cnpPeer, protocols []cnpv1alpha2.ClusterNetworkPolicyProtocol, strict bool) (*compiledRule, field.ErrorList) {
	cr := &compiledRule{policy: cp, direction: dir, index: index, name: name, anyPort: len(protocols) == 0}
	var errs field.ErrorList
	if len(written) > cnpMaxRuleName {
		errs = append(errs, field.TooLong(path.Child("name"), Truncate(written), cnpMaxRuleName))
	}
	switch action {
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept:
		cr.action = ActionAllow
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny:
		cr.action = ActionDeny
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionPass:
		cr.action = ActionPass
	case "":
		errs = append(errs, field.Required(path.Child("action"), "Accept, Deny or Pass"))
	default:
		errs = append(errs, field.NotSupported(path.Child("action"), action, []string{"Accept", "Deny", "Pass"}))
	}
	peersPath := path.Child("to")
	if dir == Ingress {
		peersPath = path.Child("from")
	}
	switch n := len(peers); {
	case n == 0:
		errs = append(errs, field.Required(peersPath, "at least one peer"))
	case n > cnpMaxPeers:
		errs = append(errs, field.TooMany(peersPath, n, cnpMaxPeers))
	}
	// unknown is set by a peer or protocol with no known field (fail closed).
	unknown := false
	noNamedPorts := "" // a peer kind that has no named ports
	for i := range peers {
		p := &peers[i]
		pp := peersPath.Index(i)
		set := p.fields()
		switch len(set) {
		case 0:
			if strict {
				errs = append(errs, field.Required(pp, "set exactly one peer field (namespaces, pods, nodes, networks or domainNames)"))
			}
			unknown = true
			continue
		case 1:
		default:
			errs = append(errs, field.Invalid(pp, strings.Join(set, ", "), "set exactly one peer field"))
			continue
		}
		var e field.ErrorList
		switch {
		case p.namespaces != nil:
			out := compiledPeer{kind: peerNamespaces}
			out.nsSel, e = compileSelector(pp.Child("namespaces"), p.namespaces)
			errs = append(errs, e...)
			cr.peers = append(cr.peers, out)
		case p.pods != nil:
			out := compiledPeer{kind: peerPods}
			out.nsSel, e = compileSelector(pp.Child("pods", "namespaceSelector"), &p.pods.NamespaceSelector)
			errs = append(errs, e...)
			out.podSel, e = compileSelector(pp.Child("pods", "podSelector"), &p.pods.PodSelector)
			errs = append(errs, e...)
			cr.peers = append(cr.peers, out)
		case p.nodes != nil:
			noNamedPorts = "nodes"
			out := compiledPeer{kind: peerNodes}
			out.nodeSel, e = compileSelector(pp.Child("nodes"), p.nodes)
			errs = append(errs, e...)
			cr.peers = append(cr.peers, out)
			cp.nodePeers = true
		case p.networks != nil:
			noNamedPorts = "networks"
			np := pp.Child("networks")
			if n := len(p.networks); n == 0 || n > cnpMaxItems {
				errs = append(errs, field.Invalid(np, n, fmt.Sprintf("must list 1 to %d CIDRs", cnpMaxItems)))
			}
			out := compiledPeer{kind: peerCIDR}
			for j, c := range p.networks {
				pfx, err := netip.ParsePrefix(string(c))
				switch {
				case len(c) > 43:
					errs = append(errs, field.TooLong(np.Index(j), Truncate(string(c)), 43))
				case err != nil:
					errs = append(errs, field.Invalid(np.Index(j), string(c), "Invalid CIDR format provided: "+err.Error()))
				case pfx != pfx.Masked():
					errs = append(errs, field.Invalid(np.Index(j), string(c), fmt.Sprintf("Invalid CIDR format provided: host bits set; did you mean %s?", pfx.Masked())))
				default:
					out.prefixes = append(out.prefixes, pfx)
				}
			}
			out.prefixes = mergePrefixes(out.prefixes)
			cr.peers = append(cr.peers, out)
		case p.domainNames != nil:
			noNamedPorts = "domainNames"
			dp := pp.Child("domainNames")
			if action != cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept {
				errs = append(errs, field.Forbidden(dp, "domainNames are only supported in Accept rules"))
			}
			if n := len(p.domainNames); n == 0 || n > cnpMaxItems {
				errs = append(errs, field.Invalid(dp, n, fmt.Sprintf("must list 1 to %d domain names", cnpMaxItems)))
			}
			for j, d := range p.domainNames {
				pat, err := CNPDomainPattern(string(d))
				if err != nil {
					errs = append(errs, field.Invalid(dp.Index(j), Truncate(string(d)), err.Error()))
					continue
				}
				cr.peers = append(cr.peers, compiledPeer{kind: peerFQDN, pattern: pat})
				cr.hasFQDN = true
			}
		}
	}
	protoPath := path.Child("protocols")
	if n := len(protocols); n > cnpMaxItems {
		errs = append(errs, field.TooMany(protoPath, n, cnpMaxItems))
	}
	for i, pr := range protocols {
		ports, known, e := compileCNPProtocol(protoPath.Index(i), pr, strict)
		errs = append(errs, e...)
		if !known {
			unknown = true
			continue
		}
		if noNamedPorts != "" && pr.DestinationNamedPort != "" {
			errs = append(errs, field.Invalid(protoPath.Index(i).Child("destinationNamedPort"), pr.DestinationNamedPort,
				"networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames"))
		}
		cr.ports = append(cr.ports, ports...)
	}
	if unknown && cr.action != ActionAllow {
		// Upstream's fail-closed rule: a Deny or Pass rule with a peer (or
		// protocol) egressd does not know is a "Deny all" rule.
		cr.action, cr.anyPeer, cr.anyPort, cr.peers, cr.ports, cr.hasFQDN = ActionDeny, true, true, nil, nil, false
		cr.failClosed = true
	}
	return cr, errs
}

// compileCNPProtocol translates one protocols entry: a tcp, udp or sctp port
// (number or range) or a destinationNamedPort (which resolves on the
// destination pod with whatever protocol its container port has). known is
// false for an entry with no field egressd knows.
func compileCNPProtocol(path *field.Path, pr cnpv1alpha2.ClusterNetworkPolicyProtocol, strict bool) ([]compiledPort, bool, field.ErrorList) {
	type one struct {
		proto Protocol
		port  *cnpv1alpha2.Port
		name  string
		set   bool
	}
	all := []one{
		{ProtocolTCP, portOf(pr.TCP), "tcp", pr.TCP != nil},
		{ProtocolUDP, portOf(pr.UDP), "udp", pr.UDP != nil},
		{ProtocolSCTP, portOf(pr.SCTP), "sctp", pr.SCTP != nil},
	}
	var set []string
	var chosen *one
	for i := range all {
		if all[i].set {
			set = append(set, all[i].name)
			chosen = &all[i]
		}
	}
	if pr.DestinationNamedPort != "" {
		set = append(set, "destinationNamedPort")
	}
	switch len(set) {
	case 0:
		if strict {
			return nil, false, field.ErrorList{field.Required(path, "set exactly one of tcp, udp, sctp or destinationNamedPort")}
		}
		return nil, false, nil
	case 1:
	default:
		return nil, true, field.ErrorList{field.Invalid(path, strings.Join(set, ", "), "set exactly one of tcp, udp, sctp or destinationNamedPort")}
	}
	if pr.DestinationNamedPort != "" {
		for _, msg := range validation.IsValidPortName(pr.DestinationNamedPort) {
			return nil, true, field.ErrorList{field.Invalid(path.Child("destinationNamedPort"), Truncate(pr.DestinationNamedPort), msg)}
		}
		out := make([]compiledPort, 0, len(Protocols))
		for _, proto := range Protocols {
			out = append(out, compiledPort{protocol: proto, name: pr.DestinationNamedPort})
		}
		return out, true, nil
	}
	pp := path.Child(chosen.name, "destinationPort")
	port := chosen.port
	if port == nil || (port.Number == 0 && port.Range == nil) {
		if strict {
			return nil, false, field.ErrorList{field.Required(pp, "set number or range")}
		}
		return nil, false, nil
	}
	if port.Number != 0 && port.Range != nil {
		return nil, true, field.ErrorList{field.Invalid(pp, "number, range", "set exactly one of number or range")}
	}
	if port.Range == nil {
		if port.Number < 1 || port.Number > 65535 {
			return nil, true, field.ErrorList{field.Invalid(pp.Child("number"), port.Number, "must be between 1 and 65535")}
		}
		return []compiledPort{{protocol: chosen.proto, first: port.Number, last: port.Number}}, true, nil
	}
	r := port.Range
	var errs field.ErrorList
	for _, v := range []struct {
		n string
		v int32
	}{{"start", r.Start}, {"end", r.End}} {
		if v.v < 1 || v.v > 65535 {
			errs = append(errs, field.Invalid(pp.Child("range", v.n), v.v, "must be between 1 and 65535"))
		}
	}
	if errs == nil && r.Start >= r.End {
		errs = append(errs, field.Invalid(pp.Child("range"), fmt.Sprintf("%d-%d", r.Start, r.End), "Start port must be less than End port"))
	}
	if errs != nil {
		return nil, true, errs
	}
	return []compiledPort{{protocol: chosen.proto, first: r.Start, last: r.End}}, true, nil
}

func portOf[T cnpv1alpha2.ClusterNetworkPolicyProtocolTCP | cnpv1alpha2.ClusterNetworkPolicyProtocolUDP | cnpv1alpha2.ClusterNetworkPolicyProtocolSCTP](p *T) *cnpv1alpha2.Port {
	if p == nil {
		return nil
	}
	switch v := any(p).(type) {
	case *cnpv1alpha2.ClusterNetworkPolicyProtocolTCP:
		return v.DestinationPort
	case *cnpv1alpha2.ClusterNetworkPolicyProtocolUDP:
		return v.DestinationPort
	case *cnpv1alpha2.ClusterNetworkPolicyProtocolSCTP:
		return v.DestinationPort
	}
	return nil
}

// CNPDomainPattern translates a ClusterNetworkPolicy DomainName into an
// egressd domain pattern with the same meaning: upstream's leading "*."
// matches one or more whole labels (egressd's "**."), and never the apex;
// any other name matches exactly, case-insensitively, with a trailing dot
// ignored. A "*" anywhere but as the whole first label is refused.
func CNPDomainPattern(name string) (domain.Pattern, error) {
	if !cnpDomainName.MatchString(name) {
		if i := strings.IndexByte(name, '*'); i >= 0 && !(i == 0 && strings.HasPrefix(name, "*.")) || strings.Count(name, "*") > 1 {
			return domain.Pattern{}, fmt.Errorf("'*' may only be the whole first label (\"*.example.com\")")
		}
		return domain.Pattern{}, fmt.Errorf("not a domain name: must match %s", cnpDomainName.String())
	}
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		return domain.Parse("**." + rest)
	}
	return domain.Parse(name)
}
