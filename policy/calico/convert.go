package calico

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// APIGroup is Calico's API group.
const APIGroup = "projectcalico.org"

// Problem is what could not be converted: the source document, the object,
// the field and why.
type Problem struct {
	Source, Object, Field, Reason string
}

func (p Problem) Error() string {
	parts := []string{p.Source}
	for _, s := range []string{p.Object, p.Field} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(append(parts, p.Reason), ": ")
}

// Result is the outcome of Convert: the egressd policies, in Calico's
// evaluation order, and what was refused.
type Result struct {
	Policies []*policy.ClusterFirewallPolicy
	// From names, per policy, the Calico object it comes from.
	From     []string
	Problems []Problem
}

// Input is one Calico document read from a file.
type Input struct {
	// Source is "file:document".
	Source string
	Doc    []byte
}

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

type tierSpec struct {
	Order         *float64 `json:"order,omitempty"`
	DefaultAction string   `json:"defaultAction,omitempty"`
}

type policySpec struct {
	Tier                   string   `json:"tier,omitempty"`
	Order                  *float64 `json:"order,omitempty"`
	Selector               string   `json:"selector,omitempty"`
	NamespaceSelector      string   `json:"namespaceSelector,omitempty"`
	ServiceAccountSelector string   `json:"serviceAccountSelector,omitempty"`
	Types                  []string `json:"types,omitempty"`
	Ingress                []rule   `json:"ingress,omitempty"`
	Egress                 []rule   `json:"egress,omitempty"`
	DoNotTrack             bool     `json:"doNotTrack,omitempty"`
	PreDNAT                bool     `json:"preDNAT,omitempty"`
	ApplyOnForward         bool     `json:"applyOnForward,omitempty"`
	PerformanceHints       []string `json:"performanceHints,omitempty"`
	StagedAction           string   `json:"stagedAction,omitempty"`
}

type rule struct {
	Action      string              `json:"action"`
	Protocol    *intstr.IntOrString `json:"protocol,omitempty"`
	NotProtocol *intstr.IntOrString `json:"notProtocol,omitempty"`
	IPVersion   *int                `json:"ipVersion,omitempty"`
	ICMP        map[string]any      `json:"icmp,omitempty"`
	NotICMP     map[string]any      `json:"notICMP,omitempty"`
	HTTP        map[string]any      `json:"http,omitempty"`
	Metadata    map[string]any      `json:"metadata,omitempty"`
	Source      entity              `json:"source,omitempty"`
	Destination entity              `json:"destination,omitempty"`
}

type entity struct {
	Nets              []string             `json:"nets,omitempty"`
	NotNets           []string             `json:"notNets,omitempty"`
	Selector          string               `json:"selector,omitempty"`
	NotSelector       string               `json:"notSelector,omitempty"`
	NamespaceSelector string               `json:"namespaceSelector,omitempty"`
	Ports             []intstr.IntOrString `json:"ports,omitempty"`
	NotPorts          []intstr.IntOrString `json:"notPorts,omitempty"`
	Domains           []string             `json:"domains,omitempty"`
	ServiceAccounts   map[string]any       `json:"serviceAccounts,omitempty"`
	Services          map[string]any       `json:"services,omitempty"`
}

// calicoPolicy is a NetworkPolicy or GlobalNetworkPolicy read.
type calicoPolicy struct {
	src, kind, ns, name string
	spec                policySpec
	tier                string
	order               float64 // +Inf when unset
}

func (p *calicoPolicy) ref() string {
	if p.ns != "" {
		return p.kind + "/" + p.ns + "/" + p.name
	}
	return p.kind + "/" + p.name
}

// defaultTierOrder is the order of Calico's default tier.
const defaultTierOrder = 1e6

// Convert converts Calico documents: Tier, NetworkPolicy and
// GlobalNetworkPolicy into ClusterFirewallPolicy objects of the Admin tier,
// whose first-match order by priority is Calico's order (tier order, then
// policy order, then name; rules in order). For every policy a second
// ClusterFirewallPolicy at the end of its tier denies what the tier did not
// decide for the endpoints the policy selects (Calico's end-of-tier drop),
// unless the tier's defaultAction is Pass. Anything without an egressd
// equivalent is a Problem; the policy it belongs to is left out.
func Convert(inputs []Input) *Result {
	res := &Result{}
	tiers := map[string]tierSpec{"default": {}}
	var pols []*calicoPolicy
	for _, in := range inputs {
		var o object
		if err := manifest.Unmarshal(in.Doc, &o, false); err != nil {
			res.problem(in.Source, "", "", "not a YAML/JSON object: "+err.Error())
			continue
		}
		group, _, _ := strings.Cut(o.APIVersion, "/")
		ref := o.Kind + "/" + o.Metadata.Name
		if o.Metadata.Namespace != "" {
			ref = o.Kind + "/" + o.Metadata.Namespace + "/" + o.Metadata.Name
		}
		if group != APIGroup && group != "crd."+APIGroup {
			res.problem(in.Source, ref, "apiVersion", fmt.Sprintf("%s is not a Calico kind (want %s/v3)", policy.Truncate(o.APIVersion), APIGroup))
			continue
		}
		switch o.Kind {
		case "Tier":
			var t struct {
				envelope
				Spec tierSpec `json:"spec"`
			}
			if err := manifest.Unmarshal(in.Doc, &t, true); err != nil {
				res.problem(in.Source, ref, "spec", cleanJSON(err.Error()))
				continue
			}
			tiers[o.Metadata.Name] = t.Spec
		case "NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy", "StagedGlobalNetworkPolicy":
			if strings.HasPrefix(o.Kind, "Staged") {
				res.problem(in.Source, ref, "kind", "a staged policy: convert it once it is enforced, or write the result with mode: Audit")
				continue
			}
			var p struct {
				envelope
				Spec policySpec `json:"spec"`
			}
			if err := manifest.Unmarshal(in.Doc, &p, true); err != nil {
				res.problem(in.Source, ref, "spec", cleanJSON(err.Error()))
				continue
			}
			cp := &calicoPolicy{src: in.Source, kind: o.Kind, ns: o.Metadata.Namespace, name: o.Metadata.Name, spec: p.Spec, tier: p.Spec.Tier, order: math.Inf(1)}
			if cp.tier == "" {
				cp.tier = "default"
			}
			if p.Spec.Order != nil {
				cp.order = *p.Spec.Order
			}
			if o.Kind == "NetworkPolicy" && cp.ns == "" {
				res.problem(in.Source, ref, "metadata.namespace", "a NetworkPolicy needs a namespace")
				continue
			}
			pols = append(pols, cp)
		case "NetworkSet", "GlobalNetworkSet":
			res.problem(in.Source, ref, "kind", "egressd has no network sets yet: write the set's nets and domains into the rules that select it")
		case "HostEndpoint", "Profile":
			res.problem(in.Source, ref, "kind", "egressd enforces pod traffic only: host endpoints and profiles have no equivalent")
		default:
			res.problem(in.Source, ref, "kind", fmt.Sprintf("%s has no egressd equivalent", policy.Truncate(o.Kind)))
		}
	}
	tierOrder := func(name string) float64 {
		if t, ok := tiers[name]; ok && t.Order != nil {
			return *t.Order
		}
		if name == "default" {
			return defaultTierOrder
		}
		return math.Inf(1)
	}
	for _, p := range pols {
		if _, ok := tiers[p.tier]; !ok {
			res.problem(p.src, p.ref(), "spec.tier", fmt.Sprintf("tier %q is not defined in the input (its order decides where the policy goes)", policy.Truncate(p.tier)))
			p.tier = ""
		}
	}
	sort.SliceStable(pols, func(i, j int) bool {
		a, b := pols[i], pols[j]
		if ta, tb := tierOrder(a.tier), tierOrder(b.tier); ta != tb {
			return ta < tb
		}
		if a.tier != b.tier {
			return a.tier < b.tier
		}
		if a.order != b.order {
			return a.order < b.order
		}
		return a.ref() < b.ref()
	})
	// Tiers with policies, in order, for Pass.
	var tierSeq []string
	for _, p := range pols {
		if p.tier != "" && (len(tierSeq) == 0 || tierSeq[len(tierSeq)-1] != p.tier) {
			tierSeq = append(tierSeq, p.tier)
		}
	}
	lastTier := ""
	if len(tierSeq) > 0 {
		lastTier = tierSeq[len(tierSeq)-1]
	}
	type converted struct {
		from    string
		pols    []*policy.ClusterFirewallPolicy
		endDeny []*policy.ClusterFirewallPolicy
	}
	var out []converted
	byTier := map[string][]int{}
	inTier := map[string]int{}
	for _, p := range pols {
		inTier[p.tier]++
	}
	for _, p := range pols {
		if p.tier == "" {
			continue
		}
		c := &converter{res: res, p: p, lastTier: p.tier == lastTier, soleInTier: inTier[p.tier] == 1, passes: map[policy.Direction]bool{}}
		cfps, ends := c.convert()
		if cfps == nil {
			continue
		}
		if tiers[p.tier].DefaultAction == "Pass" {
			ends = nil
		}
		byTier[p.tier] = append(byTier[p.tier], len(out))
		out = append(out, converted{from: p.src + " " + p.ref(), pols: cfps, endDeny: ends})
	}
	// Priorities: each policy after the one before it, each tier's
	// end-of-tier denies after its policies.
	var ordered []*policy.ClusterFirewallPolicy
	var from []string
	for _, t := range tierSeq {
		for _, i := range byTier[t] {
			ordered = append(ordered, out[i].pols...)
			for range out[i].pols {
				from = append(from, out[i].from)
			}
		}
		for _, i := range byTier[t] {
			ordered = append(ordered, out[i].endDeny...)
			for range out[i].endDeny {
				from = append(from, out[i].from+" (end of tier "+t+")")
			}
		}
	}
	if len(ordered) > policy.MaxPriority+1 {
		res.problem("", "", "", fmt.Sprintf("%d policies once converted: more than the %d priorities of the Admin tier", len(ordered), policy.MaxPriority+1))
		return res
	}
	step := max(1, min(10, (policy.MaxPriority)/max(1, len(ordered))))
	for i, cfp := range ordered {
		cfp.Spec.Priority = int32(i * step)
	}
	res.Policies, res.From = ordered, from
	return res
}

func (r *Result) problem(src, object, field, reason string) {
	r.Problems = append(r.Problems, Problem{Source: src, Object: object, Field: field, Reason: reason})
}

// envelope is what a strict decode of a Calico object accepts besides spec.
type envelope struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
}

var jsonPrefix = regexp.MustCompile(`^(json: |error unmarshaling JSON: while decoding JSON: json: )`)

func cleanJSON(s string) string { return jsonPrefix.ReplaceAllString(s, "") }

// converter converts one Calico policy.
type converter struct {
	res      *Result
	p        *calicoPolicy
	lastTier bool
	// soleInTier: the policy is the only one of its tier, so a last,
	// unconditional Pass rule is "the tier decides nothing more": no rule
	// and no end-of-tier drop for the direction (passes).
	soleInTier bool
	passes     map[policy.Direction]bool
	failed     bool
}

func (c *converter) fail(field, reason string) {
	c.failed = true
	c.res.problem(c.p.src, c.p.ref(), field, reason)
}

// namespaceKeys renames Calico's namespace name label.
var namespaceKeys = map[string]string{"projectcalico.org/name": policy.NamespaceNameLabel}

func (c *converter) convert() (pols, ends []*policy.ClusterFirewallPolicy) {
	s := &c.p.spec
	switch {
	case s.DoNotTrack, s.PreDNAT, s.ApplyOnForward:
		c.fail("spec", "doNotTrack, preDNAT and applyOnForward are host-endpoint settings with no egressd equivalent")
	case s.ServiceAccountSelector != "":
		c.fail("spec.serviceAccountSelector", "egressd selects pods by their labels only (no service-account selector yet)")
	}
	types := s.Types
	if len(types) == 0 {
		types = []string{"Ingress"}
		if len(s.Egress) > 0 {
			types = append(types, "Egress")
		}
	}
	hasType := map[string]bool{}
	for i, t := range types {
		if t != "Ingress" && t != "Egress" {
			c.fail(fmt.Sprintf("spec.types[%d]", i), fmt.Sprintf("%q: want Ingress or Egress", t))
		}
		hasType[t] = true
	}
	// Subjects: the policy's namespaces and pods.
	var nsSels []metav1.LabelSelector
	if c.p.kind == "NetworkPolicy" {
		nsSels = []metav1.LabelSelector{{MatchLabels: map[string]string{policy.NamespaceNameLabel: c.p.ns}}}
	} else {
		var err error
		if nsSels, err = LabelSelectors(s.NamespaceSelector, namespaceKeys); err != nil {
			c.fail("spec.namespaceSelector", err.Error())
		}
	}
	podSels, err := LabelSelectors(s.Selector, nil)
	if err != nil {
		c.fail("spec.selector", err.Error())
	}
	for _, sel := range podSels {
		if calicoKey(sel) {
			c.fail("spec.selector", "projectcalico.org/ labels of endpoints (namespace, service account, orchestrator) have no egressd equivalent; select the namespace with namespaceSelector")
		}
	}
	var ingress, egress []policy.Rule
	if hasType["Ingress"] {
		ingress = c.rules("spec.ingress", policy.Ingress, s.Ingress)
	} else if len(s.Ingress) > 0 {
		c.fail("spec.ingress", "types leaves out Ingress: Calico ignores these rules; remove them")
	}
	if hasType["Egress"] {
		egress = c.rules("spec.egress", policy.Egress, s.Egress)
	} else if len(s.Egress) > 0 {
		c.fail("spec.egress", "types leaves out Egress: Calico ignores these rules; remove them")
	}
	if c.failed {
		return nil, nil
	}
	base := "calico-" + dnsName(c.p.ns, c.p.name)
	n := 0
	for _, nsSel := range nsSels {
		for _, podSel := range podSels {
			name := base
			if len(nsSels)*len(podSels) > 1 {
				name = fmt.Sprintf("%s-%d", base, n)
			}
			n++
			nsSel, podSel := nsSel, podSel
			var podPtr *metav1.LabelSelector
			if len(podSel.MatchLabels)+len(podSel.MatchExpressions) > 0 {
				podPtr = &podSel
			}
			subj := policy.Subject{NamespaceSelector: nsSel, PodSelector: podPtr}
			p := newCFP(name, subj)
			p.Spec.Ingress, p.Spec.Egress = ingress, egress
			if hasType["Ingress"] && p.Spec.Ingress == nil {
				p.Spec.Ingress = []policy.Rule{}
			}
			if hasType["Egress"] && p.Spec.Egress == nil {
				p.Spec.Egress = []policy.Rule{}
			}
			pols = append(pols, p)
			end := newCFP(name+"-end-of-tier", subj)
			if hasType["Ingress"] && !c.passes[policy.Ingress] {
				end.Spec.Ingress = []policy.Rule{{Name: "end-of-tier", Action: policy.ActionDeny}}
			}
			if hasType["Egress"] && !c.passes[policy.Egress] {
				end.Spec.Egress = []policy.Rule{{Name: "end-of-tier", Action: policy.ActionDeny}}
			}
			if end.Spec.Ingress != nil || end.Spec.Egress != nil {
				ends = append(ends, end)
			}
		}
	}
	return pols, ends
}

func calicoKey(sel metav1.LabelSelector) bool {
	for k := range sel.MatchLabels {
		if strings.HasPrefix(k, "projectcalico.org/") {
			return true
		}
	}
	for _, r := range sel.MatchExpressions {
		if strings.HasPrefix(r.Key, "projectcalico.org/") {
			return true
		}
	}
	return false
}

func newCFP(name string, subj policy.Subject) *policy.ClusterFirewallPolicy {
	p := &policy.ClusterFirewallPolicy{}
	p.APIVersion, p.Kind = policy.APIVersion, policy.KindClusterFirewallPolicy
	p.Name = name
	p.Spec.Tier = policy.TierAdmin
	p.Spec.Subject = subj
	return p
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// dnsName joins parts into a DNS-1123 label-ish name.
func dnsName(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p == "" {
			continue
		}
		out = append(out, strings.Trim(nonName.ReplaceAllString(strings.ToLower(p), "-"), "-"))
	}
	s := strings.Join(out, "-")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func (c *converter) rules(path string, dir policy.Direction, rules []rule) []policy.Rule {
	var out []policy.Rule
	for i := range rules {
		if i == len(rules)-1 && c.soleInTier && rules[i].Action == "Pass" && unconditional(&rules[i]) {
			c.passes[dir] = true // the tier ends here for what is left
			continue
		}
		if r, ok := c.rule(fmt.Sprintf("%s[%d]", path, i), dir, &rules[i]); ok {
			r.Name = fmt.Sprintf("%s-%d", strings.ToLower(string(dir)), i)
			out = append(out, r)
		}
	}
	return out
}

func (c *converter) rule(path string, dir policy.Direction, r *rule) (policy.Rule, bool) {
	var out policy.Rule
	ok := true
	fail := func(field, reason string) {
		c.fail(path+field, reason)
		ok = false
	}
	switch r.Action {
	case "Allow":
		out.Action = policy.ActionAllow
	case "Deny":
		out.Action = policy.ActionDeny
	case "Pass":
		if !c.lastTier {
			fail(".action", "Pass goes to the next Calico tier; egressd's Pass skips the whole Admin tier, so it converts only in the last tier with policies")
		}
		out.Action = policy.ActionPass
	case "Log":
		fail(".action", "egressd has no Log action yet (a rule that reports and continues)")
	default:
		fail(".action", fmt.Sprintf("%q: want Allow, Deny, Pass or Log", policy.Truncate(r.Action)))
	}
	switch {
	case r.NotProtocol != nil:
		fail(".notProtocol", "egressd matches protocols positively only")
	case r.ICMP != nil || r.NotICMP != nil:
		fail(".icmp", "egressd has no ICMP matches yet")
	case r.HTTP != nil:
		fail(".http", "HTTP matches are egressd's L7 proxy's (docs/l7.md), not a policy rule")
	case r.IPVersion != nil:
		fail(".ipVersion", "egressd rules match both families; write the nets of one family instead")
	}
	var proto policy.Protocol
	if r.Protocol != nil {
		switch strings.ToUpper(r.Protocol.String()) {
		case "TCP", "6":
			proto = policy.ProtocolTCP
		case "UDP", "17":
			proto = policy.ProtocolUDP
		case "SCTP", "132":
			proto = policy.ProtocolSCTP
		default:
			fail(".protocol", fmt.Sprintf("%s: egressd matches TCP, UDP and SCTP", policy.Truncate(r.Protocol.String())))
		}
	}
	// The remote side holds the peers; ports are always the destination's.
	local, remote, localName, remoteName := r.Destination, r.Source, ".destination", ".source"
	if dir == policy.Egress {
		local, remote, localName, remoteName = r.Source, r.Destination, ".source", ".destination"
	}
	if local.Selector != "" || local.NotSelector != "" || local.NamespaceSelector != "" || len(local.Nets)+len(local.NotNets)+len(local.Domains) > 0 || local.ServiceAccounts != nil || local.Services != nil {
		fail(localName, "matches on the policy's own endpoints in a rule have no egressd equivalent (select them in the policy's selector)")
	}
	if len(r.Source.Ports)+len(r.Source.NotPorts) > 0 {
		fail(".source.ports", "egressd matches destination ports only")
	}
	if len(r.Destination.NotPorts) > 0 {
		fail(".destination.notPorts", "egressd matches ports positively only")
	}
	for j, p := range r.Destination.Ports {
		pr, err := convertPort(p, proto)
		if err != nil {
			fail(fmt.Sprintf(".destination.ports[%d]", j), err.Error())
			continue
		}
		out.Ports = append(out.Ports, pr)
	}
	if len(r.Destination.Ports) == 0 && proto != "" {
		out.Ports = []policy.PortRule{{Protocol: proto}}
	}
	peers, err := c.peers(remote)
	if err != nil {
		fail(remoteName+err.field, err.reason)
	}
	if dir == policy.Ingress {
		out.From = peers
		if len(remote.Domains) > 0 {
			fail(remoteName+".domains", "domains match destinations of egress rules only")
		}
	} else {
		out.To = peers
	}
	return out, ok
}

// unconditional says whether a rule matches every packet.
func unconditional(r *rule) bool {
	empty := func(e *entity) bool {
		return len(e.Nets)+len(e.NotNets)+len(e.Ports)+len(e.NotPorts)+len(e.Domains) == 0 && e.Selector == "" && e.NotSelector == "" &&
			e.NamespaceSelector == "" && e.ServiceAccounts == nil && e.Services == nil
	}
	return r.Protocol == nil && r.NotProtocol == nil && r.IPVersion == nil && r.ICMP == nil && r.NotICMP == nil && r.HTTP == nil &&
		empty(&r.Source) && empty(&r.Destination)
}

type fieldError struct{ field, reason string }

func (c *converter) peers(e entity) ([]policy.Peer, *fieldError) {
	kinds := 0
	if len(e.Nets)+len(e.NotNets) > 0 {
		kinds++
	}
	if e.Selector != "" || e.NotSelector != "" || e.NamespaceSelector != "" {
		kinds++
	}
	if len(e.Domains) > 0 {
		kinds++
	}
	switch {
	case e.ServiceAccounts != nil:
		return nil, &fieldError{".serviceAccounts", "egressd selects pods by their labels only (no service-account match yet)"}
	case e.Services != nil:
		return nil, &fieldError{".services", "egressd has no Service match; select the Service's pods or its cluster IP"}
	case kinds > 1:
		return nil, &fieldError{"", "Calico ANDs nets, selectors and domains of one rule side; an egressd peer is one of them: split the rule"}
	}
	switch {
	case len(e.Nets)+len(e.NotNets) > 0:
		return netPeers(e.Nets, e.NotNets)
	case len(e.Domains) > 0:
		var out []policy.Peer
		for j, d := range e.Domains {
			f, reason := fqdnOf(d)
			if reason != "" {
				return nil, &fieldError{fmt.Sprintf(".domains[%d]", j), reason}
			}
			out = append(out, policy.Peer{FQDN: f})
		}
		return out, nil
	case kinds == 0:
		return nil, nil // every peer
	}
	sel := e.Selector
	if e.NotSelector != "" {
		switch {
		case sel == "":
			sel = "!(" + e.NotSelector + ")"
		default:
			sel = "(" + sel + ") && !(" + e.NotSelector + ")"
		}
	}
	// Namespaces: the policy's own for a NetworkPolicy rule without
	// namespaceSelector; every namespace for a GlobalNetworkPolicy.
	var nsSels []metav1.LabelSelector
	switch {
	case e.NamespaceSelector != "":
		var err error
		if nsSels, err = LabelSelectors(e.NamespaceSelector, namespaceKeys); err != nil {
			return nil, &fieldError{".namespaceSelector", err.Error()}
		}
	case c.p.kind == "NetworkPolicy":
		nsSels = []metav1.LabelSelector{{MatchLabels: map[string]string{policy.NamespaceNameLabel: c.p.ns}}}
	default:
		nsSels = []metav1.LabelSelector{{}}
	}
	if sel == "" {
		out := make([]policy.Peer, 0, len(nsSels))
		for i := range nsSels {
			out = append(out, policy.Peer{Namespaces: &nsSels[i]})
		}
		return out, nil
	}
	podSels, err := LabelSelectors(sel, nil)
	if err != nil {
		field := ".selector"
		if e.NotSelector != "" {
			field = ".notSelector"
		}
		return nil, &fieldError{field, err.Error()}
	}
	var out []policy.Peer
	for i := range nsSels {
		for j := range podSels {
			if calicoKey(podSels[j]) {
				return nil, &fieldError{".selector", "projectcalico.org/ labels of endpoints have no egressd equivalent; use namespaceSelector"}
			}
			ns := nsSels[i]
			out = append(out, policy.Peer{Pods: &policy.PodsPeer{NamespaceSelector: &ns, PodSelector: podSels[j]}})
		}
	}
	return out, nil
}

// netPeers turns nets and notNets into CIDR peers: each net without the
// notNets inside it; notNets alone are every address but them.
func netPeers(nets, notNets []string) ([]policy.Peer, *fieldError) {
	parse := func(field string, list []string) ([]netip.Prefix, *fieldError) {
		var out []netip.Prefix
		for i, s := range list {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				if a, aerr := netip.ParseAddr(s); aerr == nil {
					p = netip.PrefixFrom(a, a.BitLen())
				} else {
					return nil, &fieldError{fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%q is not a CIDR", policy.Truncate(s))}
				}
			}
			out = append(out, p.Masked())
		}
		return out, nil
	}
	ps, fe := parse(".nets", nets)
	if fe != nil {
		return nil, fe
	}
	nps, fe := parse(".notNets", notNets)
	if fe != nil {
		return nil, fe
	}
	if len(ps) == 0 {
		ps = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	var out []policy.Peer
	for _, p := range ps {
		peer := policy.Peer{CIDR: p.String()}
		covered := false
		for _, n := range nps {
			switch {
			case n.Addr().Is4() != p.Addr().Is4() || !n.Overlaps(p):
			case n.Bits() <= p.Bits():
				covered = true // the whole net is excluded
			default:
				peer.Except = append(peer.Except, n.String())
			}
		}
		if !covered {
			out = append(out, peer)
		}
	}
	return out, nil
}

// fqdnOf converts a Calico domain. In Calico a "*" label matches one or more
// labels at its position: "*.example.com" is egressd's "**.example.com".
func fqdnOf(d string) (*policy.FQDNPeer, string) {
	if !strings.Contains(d, "*") {
		return &policy.FQDNPeer{MatchName: d}, ""
	}
	labels := strings.Split(d, ".")
	for i, l := range labels {
		if !strings.Contains(l, "*") {
			continue
		}
		if l != "*" {
			return nil, fmt.Sprintf("%q: a wildcard inside a label has no Calico meaning to keep", policy.Truncate(d))
		}
		if i != 0 {
			return nil, fmt.Sprintf("%q: Calico's * matches one or more labels at its position; egressd writes that **, which it allows only as the first label so far (%s)", policy.Truncate(d), "issue 14 §B.1")
		}
	}
	if labels[0] == "*" {
		labels[0] = "**"
	}
	return &policy.FQDNPeer{MatchPattern: strings.Join(labels, ".")}, ""
}

// convertPort converts a Calico port: a number, a "from:to" range or a
// named port.
func convertPort(p intstr.IntOrString, proto policy.Protocol) (policy.PortRule, error) {
	if proto == "" {
		return policy.PortRule{}, fmt.Errorf("ports need protocol TCP, UDP or SCTP")
	}
	out := policy.PortRule{Protocol: proto}
	if p.Type == intstr.Int {
		v := intstr.FromInt32(p.IntVal)
		out.Port = &v
		return out, nil
	}
	s := p.StrVal
	if lo, hi, ok := strings.Cut(s, ":"); ok {
		a, err1 := strconv.ParseInt(lo, 10, 32)
		b, err2 := strconv.ParseInt(hi, 10, 32)
		if err1 != nil || err2 != nil {
			return out, fmt.Errorf("%q: want N or N:M", policy.Truncate(s))
		}
		v := intstr.FromInt32(int32(a))
		e := int32(b)
		out.Port, out.EndPort = &v, &e
		if a == b {
			out.EndPort = nil
		}
		return out, nil
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		v := intstr.FromInt32(int32(n))
		out.Port = &v
		return out, nil
	}
	v := intstr.FromString(s)
	out.Port = &v
	return out, nil
}
