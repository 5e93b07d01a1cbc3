package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/egressd/egressd/policy/domain"
)

// MaxPriority is the highest ClusterFirewallPolicy priority.
const MaxPriority = 1000

// ValidationError is returned for an invalid policy: every problem with its field
// path and reason.
type ValidationError struct {
	Policy PolicyRef
	Errs   field.ErrorList
}

// maxReportedErrors is how many field errors ValidationError.Error lists.
const maxReportedErrors = 10

// Error lists the first problems; the values, field paths and details it
// repeats from the policy are shortened by Truncate, so that a policy with a
// megabyte-long value does not make a megabyte-long message.
func (e *ValidationError) Error() string {
	n := min(len(e.Errs), maxReportedErrors)
	msgs := make([]string, 0, n+1)
	for _, fe := range e.Errs[:n] {
		c := *fe
		if v, ok := c.BadValue.(string); ok {
			c.BadValue = Truncate(v)
		}
		c.Field, c.Detail = Truncate(c.Field), Truncate(c.Detail)
		msgs = append(msgs, c.Error())
	}
	if len(e.Errs) > n {
		msgs = append(msgs, fmt.Sprintf("and %d more", len(e.Errs)-n))
	}
	return fmt.Sprintf("invalid %s: %s", Truncate(e.Policy.String()), strings.Join(msgs, "; "))
}

// ValidateClusterFirewallPolicy checks a ClusterFirewallPolicy and returns every
// problem with its field path; nil when valid.
func ValidateClusterFirewallPolicy(p *ClusterFirewallPolicy) error {
	_, err := compileClusterFirewallPolicy(p)
	return err
}

// ValidateFirewallPolicy checks a FirewallPolicy; nil when valid.
func ValidateFirewallPolicy(p *FirewallPolicy) error {
	_, err := compileFirewallPolicy(p)
	return err
}

func asError(ref PolicyRef, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Policy: ref, Errs: errs}
}

func validateName(path *field.Path, name string, namespaced bool, namespace string) field.ErrorList {
	var errs field.ErrorList
	if name == "" {
		errs = append(errs, field.Required(path.Child("name"), "a policy needs a name"))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			errs = append(errs, field.Invalid(path.Child("name"), name, msg))
		}
	}
	if namespaced {
		if namespace == "" {
			errs = append(errs, field.Required(path.Child("namespace"), "a namespaced policy needs a namespace"))
		} else {
			for _, msg := range validation.IsDNS1123Label(namespace) {
				errs = append(errs, field.Invalid(path.Child("namespace"), namespace, msg))
			}
		}
	} else if namespace != "" {
		errs = append(errs, field.Forbidden(path.Child("namespace"), "a cluster-scoped policy has no namespace"))
	}
	return errs
}

func compileMode(path *field.Path, m Mode) (bool, field.ErrorList) {
	switch m {
	case "", ModeEnforce:
		return false, nil
	case ModeAudit:
		return true, nil
	}
	return false, field.ErrorList{field.NotSupported(path, m, []string{string(ModeEnforce), string(ModeAudit)})}
}

func compileSelector(path *field.Path, sel *metav1.LabelSelector) (labels.Selector, field.ErrorList) {
	if sel == nil {
		return labels.Everything(), nil
	}
	// Every problem with its own path (matchExpressions[2].operator), as the
	// API server reports them; never the selector's Go form.
	if errs := metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, path); len(errs) > 0 {
		return nil, errs
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, field.ErrorList{field.Invalid(path, "", err.Error())}
	}
	return s, nil
}

func compileClusterFirewallPolicy(p *ClusterFirewallPolicy) (*compiledPolicy, error) {
	ref := PolicyRef{Kind: KindClusterFirewallPolicy, Name: p.Name}
	var errs field.ErrorList
	errs = append(errs, validateName(field.NewPath("metadata"), p.Name, false, p.Namespace)...)
	spec := field.NewPath("spec")
	cp := &compiledPolicy{ref: ref, tier: p.Spec.Tier, priority: p.Spec.Priority, lookups: LookupsObserve}
	switch p.Spec.Tier {
	case TierAdmin, TierBaseline:
	case "":
		errs = append(errs, field.Required(spec.Child("tier"), "Admin or Baseline"))
	default:
		errs = append(errs, field.NotSupported(spec.Child("tier"), p.Spec.Tier, []string{string(TierAdmin), string(TierBaseline)}))
	}
	if p.Spec.Priority < 0 || p.Spec.Priority > MaxPriority {
		errs = append(errs, field.Invalid(spec.Child("priority"), p.Spec.Priority, fmt.Sprintf("must be between 0 and %d", MaxPriority)))
	}
	var e field.ErrorList
	cp.audit, e = compileMode(spec.Child("mode"), p.Spec.Mode)
	errs = append(errs, e...)
	cp.tunnel, e = compileTunnelDetection(spec.Child("tunnelDetection"), p.Spec.TunnelDetection)
	errs = append(errs, e...)
	cp.dnsBypass, e = compileDNSBypass(spec.Child("dnsBypass"), p.Spec.DNSBypass)
	errs = append(errs, e...)
	cp.nsSel, e = compileSelector(spec.Child("subject", "namespaceSelector"), &p.Spec.Subject.NamespaceSelector)
	errs = append(errs, e...)
	cp.podSel, e = compileSelector(spec.Child("subject", "podSelector"), p.Spec.Subject.PodSelector)
	errs = append(errs, e...)
	errs = append(errs, compileRules(cp, spec, Ingress, p.Spec.Ingress)...)
	errs = append(errs, compileRules(cp, spec, Egress, p.Spec.Egress)...)
	if err := asError(ref, errs); err != nil {
		return nil, err
	}
	return cp, nil
}

func compileFirewallPolicy(p *FirewallPolicy) (*compiledPolicy, error) {
	ref := PolicyRef{Kind: KindFirewallPolicy, Namespace: p.Namespace, Name: p.Name}
	var errs field.ErrorList
	errs = append(errs, validateName(field.NewPath("metadata"), p.Name, true, p.Namespace)...)
	spec := field.NewPath("spec")
	cp := &compiledPolicy{ref: ref, tier: TierNamespaced, namespace: p.Namespace}
	var e field.ErrorList
	cp.audit, e = compileMode(spec.Child("mode"), p.Spec.Mode)
	errs = append(errs, e...)
	switch p.Spec.Lookups {
	case "", LookupsObserve:
		cp.lookups = LookupsObserve
	case LookupsEnforce:
		cp.lookups = LookupsEnforce
	default:
		errs = append(errs, field.NotSupported(spec.Child("lookups"), p.Spec.Lookups, []string{string(LookupsObserve), string(LookupsEnforce)}))
	}
	cp.tunnel, e = compileTunnelDetection(spec.Child("tunnelDetection"), p.Spec.TunnelDetection)
	errs = append(errs, e...)
	cp.podSel, e = compileSelector(spec.Child("podSelector"), &p.Spec.PodSelector)
	errs = append(errs, e...)
	cp.isolates[dirIndex(Ingress)] = p.Spec.Ingress != nil
	cp.isolates[dirIndex(Egress)] = p.Spec.Egress != nil
	errs = append(errs, compileRules(cp, spec, Ingress, p.Spec.Ingress)...)
	errs = append(errs, compileRules(cp, spec, Egress, p.Spec.Egress)...)
	if err := asError(ref, errs); err != nil {
		return nil, err
	}
	return cp, nil
}

func compileRules(cp *compiledPolicy, spec *field.Path, dir Direction, rules []Rule) field.ErrorList {
	var errs field.ErrorList
	list := spec.Child(strings.ToLower(string(dir)))
	names := map[string]int{}
	for i := range rules {
		r := &rules[i]
		path := list.Index(i)
		cr := &compiledRule{policy: cp, direction: dir, index: i, name: r.Name, action: r.Action}
		if cr.name == "" {
			cr.name = fmt.Sprintf("%s[%d]", strings.ToLower(string(dir)), i)
		} else {
			for _, msg := range validation.IsDNS1123Label(r.Name) {
				errs = append(errs, field.Invalid(path.Child("name"), r.Name, msg))
			}
			if j, dup := names[r.Name]; dup {
				errs = append(errs, field.Duplicate(path.Child("name"), fmt.Sprintf("%s (also rule %d)", r.Name, j)))
			}
			names[r.Name] = i
		}
		switch r.Action {
		case ActionAllow, ActionDeny:
		case ActionPass:
			if cp.tier != TierAdmin {
				errs = append(errs, field.Invalid(path.Child("action"), r.Action, "Pass is only allowed in the Admin tier"))
			}
		case "":
			errs = append(errs, field.Required(path.Child("action"), "Allow, Deny or Pass"))
		default:
			errs = append(errs, field.NotSupported(path.Child("action"), r.Action, []string{string(ActionAllow), string(ActionDeny), string(ActionPass)}))
		}
		peers, peersPath := r.To, path.Child("to")
		if dir == Ingress {
			peers, peersPath = r.From, path.Child("from")
			if len(r.To) > 0 {
				errs = append(errs, field.Forbidden(path.Child("to"), "an ingress rule lists its peers in from"))
			}
		} else if len(r.From) > 0 {
			errs = append(errs, field.Forbidden(path.Child("from"), "an egress rule lists its peers in to"))
		}
		cr.anyPeer = len(peers) == 0
		for j := range peers {
			cpeer, e := compilePeer(cp, peersPath.Index(j), dir, &peers[j])
			errs = append(errs, e...)
			if e == nil {
				cr.peers = append(cr.peers, cpeer)
				if cpeer.kind == peerFQDN {
					cr.hasFQDN = true
				}
			}
		}
		cr.anyPort = len(r.Ports) == 0
		for j := range r.Ports {
			port, e := compilePort(path.Child("ports").Index(j), r.Ports[j])
			errs = append(errs, e...)
			if e == nil {
				cr.ports = append(cr.ports, port)
			}
		}
		cp.rules[dirIndex(dir)] = append(cp.rules[dirIndex(dir)], cr)
	}
	return errs
}

func compilePeer(cp *compiledPolicy, path *field.Path, dir Direction, p *Peer) (compiledPeer, field.ErrorList) {
	set := 0
	if p.Pods != nil {
		set++
	}
	if p.Namespaces != nil {
		set++
	}
	if p.CIDR != "" {
		set++
	}
	if p.FQDN != nil {
		set++
	}
	if set != 1 {
		return compiledPeer{}, field.ErrorList{field.Invalid(path, set, "a peer sets exactly one of pods, namespaces, cidr or fqdn")}
	}
	if len(p.Except) > 0 && p.CIDR == "" {
		return compiledPeer{}, field.ErrorList{field.Forbidden(path.Child("except"), "except is only valid with cidr")}
	}
	var errs field.ErrorList
	switch {
	case p.Pods != nil:
		out := compiledPeer{kind: peerPods}
		var e field.ErrorList
		out.podSel, e = compileSelector(path.Child("pods", "podSelector"), &p.Pods.PodSelector)
		errs = append(errs, e...)
		if p.Pods.NamespaceSelector != nil {
			out.nsSel, e = compileSelector(path.Child("pods", "namespaceSelector"), p.Pods.NamespaceSelector)
			errs = append(errs, e...)
		} else if cp.namespace != "" {
			out.namespace = cp.namespace
		} else {
			out.nsSel = labels.Everything()
		}
		return out, errs
	case p.Namespaces != nil:
		out := compiledPeer{kind: peerNamespaces}
		var e field.ErrorList
		out.nsSel, e = compileSelector(path.Child("namespaces"), p.Namespaces)
		return out, e
	case p.CIDR != "":
		prefixes, e := compileCIDR(path, p.CIDR, p.Except)
		return compiledPeer{kind: peerCIDR, prefixes: prefixes}, e
	default:
		if dir == Ingress {
			return compiledPeer{}, field.ErrorList{field.Forbidden(path.Child("fqdn"), "fqdn peers are only valid in egress rules")}
		}
		f := p.FQDN
		if (f.MatchName == "") == (f.MatchPattern == "") {
			return compiledPeer{}, field.ErrorList{field.Invalid(path.Child("fqdn"), "", "set exactly one of matchName or matchPattern")}
		}
		if f.MatchName != "" {
			if strings.Contains(f.MatchName, "*") {
				return compiledPeer{}, field.ErrorList{field.Invalid(path.Child("fqdn", "matchName"), f.MatchName, "matchName is an exact name; use matchPattern for wildcards")}
			}
			pat, err := domain.Parse(f.MatchName)
			if err != nil {
				return compiledPeer{}, field.ErrorList{field.Invalid(path.Child("fqdn", "matchName"), f.MatchName, err.Error())}
			}
			return compiledPeer{kind: peerFQDN, pattern: pat}, nil
		}
		pat, err := domain.Parse(f.MatchPattern)
		if err != nil {
			return compiledPeer{}, field.ErrorList{field.Invalid(path.Child("fqdn", "matchPattern"), f.MatchPattern, err.Error())}
		}
		return compiledPeer{kind: peerFQDN, pattern: pat}, nil
	}
}

// compileCIDR parses a CIDR and its excepts and returns the disjoint prefixes
// that remain.
func compileCIDR(path *field.Path, cidr string, except []string) ([]netip.Prefix, field.ErrorList) {
	base, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, field.ErrorList{field.Invalid(path.Child("cidr"), cidr, "not a CIDR: "+prefixError(err))}
	}
	if base != base.Masked() {
		return nil, field.ErrorList{field.Invalid(path.Child("cidr"), cidr, fmt.Sprintf("host bits set; did you mean %s?", base.Masked()))}
	}
	var errs field.ErrorList
	var ex []netip.Prefix
	for i, s := range except {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(path.Child("except").Index(i), s, "not a CIDR: "+prefixError(err)))
		case p != p.Masked():
			errs = append(errs, field.Invalid(path.Child("except").Index(i), s, fmt.Sprintf("host bits set; did you mean %s?", p.Masked())))
		case p.Addr().Is4() != base.Addr().Is4():
			errs = append(errs, field.Invalid(path.Child("except").Index(i), s, "address family differs from cidr "+cidr))
		case p.Bits() < base.Bits() || !base.Contains(p.Addr()):
			errs = append(errs, field.Invalid(path.Child("except").Index(i), s, "must be inside cidr "+cidr))
		default:
			ex = append(ex, p)
		}
	}
	if errs != nil {
		return nil, errs
	}
	return SubtractPrefixes(base, ex), nil
}

// prefixError is the reason of a netip.ParsePrefix error without the Go
// call it repeats (`netip.ParsePrefix("10.0.0.0/33"): `).
func prefixError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "): "); strings.HasPrefix(msg, "netip.ParsePrefix(") && i >= 0 {
		return msg[i+3:]
	}
	return msg
}

// SubtractPrefixes returns base minus every prefix of except, as a sorted list of
// disjoint prefixes.
func SubtractPrefixes(base netip.Prefix, except []netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{base}
	for _, e := range except {
		var next []netip.Prefix
		for _, p := range out {
			next = append(next, subtractOne(p, e)...)
		}
		out = next
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

// subtractOne returns p minus e.
func subtractOne(p, e netip.Prefix) []netip.Prefix {
	if !p.Overlaps(e) {
		return []netip.Prefix{p}
	}
	if e.Bits() <= p.Bits() { // e covers p
		return nil
	}
	// Split p into its two halves and recurse into the one holding e.
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	hi := netip.PrefixFrom(setBit(p.Addr(), p.Bits()), p.Bits()+1)
	if lo.Contains(e.Addr()) {
		return append(subtractOne(lo, e), hi)
	}
	return append([]netip.Prefix{lo}, subtractOne(hi, e)...)
}

// setBit sets bit i (0 = most significant) of a.
func setBit(a netip.Addr, i int) netip.Addr {
	b := a.AsSlice()
	b[i/8] |= 0x80 >> (i % 8)
	out, _ := netip.AddrFromSlice(b)
	return out
}

func compilePort(path *field.Path, p PortRule) (compiledPort, field.ErrorList) {
	out := compiledPort{protocol: p.Protocol}
	switch p.Protocol {
	case "":
		out.protocol = ProtocolTCP
	case ProtocolTCP, ProtocolUDP, ProtocolSCTP:
	default:
		return out, field.ErrorList{field.NotSupported(path.Child("protocol"), p.Protocol, []string{string(ProtocolTCP), string(ProtocolUDP), string(ProtocolSCTP)})}
	}
	if p.Port == nil {
		if p.EndPort != nil {
			return out, field.ErrorList{field.Forbidden(path.Child("endPort"), "endPort needs port")}
		}
		out.all = true
		return out, nil
	}
	if p.Port.Type == intstr.String {
		if p.EndPort != nil {
			return out, field.ErrorList{field.Forbidden(path.Child("endPort"), "endPort needs a numeric port, not a named one")}
		}
		for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
			return out, field.ErrorList{field.Invalid(path.Child("port"), p.Port.StrVal, msg)}
		}
		out.name = p.Port.StrVal
		return out, nil
	}
	if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
		return out, field.ErrorList{field.Invalid(path.Child("port"), p.Port.IntVal, "must be between 1 and 65535")}
	}
	out.first, out.last = p.Port.IntVal, p.Port.IntVal
	if p.EndPort != nil {
		if *p.EndPort < p.Port.IntVal || *p.EndPort > 65535 {
			return out, field.ErrorList{field.Invalid(path.Child("endPort"), *p.EndPort, fmt.Sprintf("must be between port (%d) and 65535", p.Port.IntVal))}
		}
		out.last = *p.EndPort
	}
	return out, nil
}
