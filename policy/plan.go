package policy

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Plan is the compiled, kernel-independent form of the Store: what each
// enforced rule matches and, per workload and direction, the ordered policies to
// evaluate. Audit-mode policies are not in the Plan (they never change a
// verdict). A Plan is immutable; Compile returns a new one that shares the
// unchanged parts with the previous.
type Plan struct {
	// DefaultVerdict decides traffic no tier decided.
	DefaultVerdict Verdict
	// Policies are the enforced policies.
	Policies map[PolicyRef]*PlanPolicy
	// Workloads are every known workload with its programs.
	Workloads map[WorkloadKey]*PlanWorkload
	// Generation increases with every compile.
	Generation uint64
}

// PlanPolicy is one enforced policy with its compiled rules.
type PlanPolicy struct {
	Ref      PolicyRef
	Tier     Tier
	Priority int32
	// Ingress and Egress are the rules in evaluation order.
	Ingress, Egress []*PlanRule
}

// Rules returns the rules of a direction.
func (p *PlanPolicy) Rules(d Direction) []*PlanRule {
	if d == Ingress {
		return p.Ingress
	}
	return p.Egress
}

// PortRange is a range of destination ports of one protocol.
type PortRange struct {
	Protocol Protocol
	// All matches every port of the protocol (First and Last are then 0).
	All         bool
	First, Last uint16
}

// NamedPortTarget is a named port resolved on one destination address.
type NamedPortTarget struct {
	Addr     netip.Addr
	Protocol Protocol
	Port     uint16
}

// PlanRule is one compiled rule. A packet matches it when its remote address
// matches the peers (AnyPeer, Prefixes, or — egress only — the FQDN set of the
// rule for the source workload) and its destination port matches (AnyPort,
// Ports, or the NamedPorts of the destination address).
type PlanRule struct {
	Ref       RuleRef
	ID        string // short stable identifier, safe for kernel object names
	Direction Direction
	Action    Action
	Tier      Tier
	// AnyPeer: the rule lists no peers.
	AnyPeer bool
	// Prefixes are the addresses (pods, as full-length prefixes) and CIDRs the
	// peers match, sorted and without overlap.
	Prefixes []netip.Prefix
	// FQDN: some peers are FQDN peers; the kernel keeps a set of (workload
	// address, answer address) pairs for the rule, filled by the resolver.
	FQDN bool
	// Patterns are the FQDN patterns of the rule (canonical strings).
	Patterns []string
	// AnyPort: the rule lists no ports.
	AnyPort bool
	Ports   []PortRange
	// NamedPorts are the rule's named ports resolved on every workload that
	// defines them and can be the rule's destination (destination address,
	// protocol, port): for an ingress rule the workloads its policy selects, for
	// an egress rule the workloads its peers select (every workload when a peer
	// is a CIDR or an FQDN, or when the rule lists no peers).
	NamedPorts []NamedPortTarget
}

// Program is the ordered evaluation of one direction for one workload.
type Program struct {
	// Admin are the Admin-tier policies selecting the workload, grouped by
	// priority (equal priority in one group, sorted by reference).
	Admin [][]PolicyRef
	// Isolated is true when namespaced policies select the workload for the
	// direction; then Namespaced lists them and Baseline does not apply.
	Isolated   bool
	Namespaced []PolicyRef
	// Baseline are the Baseline-tier policies, grouped like Admin.
	Baseline [][]PolicyRef
}

// Empty reports whether no policy takes part (the node default decides).
func (p *Program) Empty() bool {
	return len(p.Admin) == 0 && !p.Isolated && len(p.Baseline) == 0
}

// Key is a canonical string of the program: equal keys, equal evaluation.
func (p *Program) Key() string {
	var b strings.Builder
	groups := func(tag string, gs [][]PolicyRef) {
		for _, g := range gs {
			b.WriteString(tag)
			for _, r := range g {
				b.WriteString(r.String())
				b.WriteByte(',')
			}
		}
	}
	groups("A|", p.Admin)
	if p.Isolated {
		b.WriteString("N|")
		for _, r := range p.Namespaced {
			b.WriteString(r.String())
			b.WriteByte(',')
		}
	}
	groups("B|", p.Baseline)
	return b.String()
}

// PlanWorkload is a workload with its programs.
type PlanWorkload struct {
	Key     WorkloadKey
	IPs     []netip.Addr
	Node    string
	Ingress Program
	Egress  Program
	// DNSBypass is what ClusterFirewallPolicies set for the workload's DNS
	// that does not go to egressd (zero: the node default).
	DNSBypass DNSBypassSetting
}

// Program returns the program of a direction.
func (w *PlanWorkload) Program(d Direction) *Program {
	if d == Ingress {
		return &w.Ingress
	}
	return &w.Egress
}

// Changes says what a compile changed, so that the dataplane applies only the
// difference.
type Changes struct {
	// Full is true for the first compile or when everything was recomputed.
	Full bool
	// Policies added, changed or removed (removed ones are absent from the Plan).
	Policies []PolicyRef
	// Rules whose matched addresses or ports changed while their policy did not.
	Rules []RuleRef
	// Workloads added, changed (addresses or programs) or removed.
	Workloads []WorkloadKey
}

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool {
	return !c.Full && len(c.Policies) == 0 && len(c.Rules) == 0 && len(c.Workloads) == 0
}

// RuleID derives a short stable identifier from a rule reference.
func RuleID(r RuleRef) string {
	h := fnv.New64a()
	h.Write([]byte(r.String()))
	return strconv.FormatUint(h.Sum64(), 36)
}

// buildProgram orders the selecting policies of one direction.
func buildProgram(sel []*compiledPolicy, dir Direction) Program {
	var admin, baseline []*compiledPolicy
	var prog Program
	di := dirIndex(dir)
	for _, p := range sel {
		switch p.tier {
		case TierAdmin:
			admin = append(admin, p)
		case TierBaseline:
			baseline = append(baseline, p)
		case TierNamespaced:
			if p.isolates[di] {
				prog.Namespaced = append(prog.Namespaced, p.ref)
			}
		}
	}
	prog.Isolated = len(prog.Namespaced) > 0
	sort.Slice(prog.Namespaced, func(i, j int) bool { return comparePolicyRefs(prog.Namespaced[i], prog.Namespaced[j]) < 0 })
	toRefs := func(gs [][]*compiledPolicy) [][]PolicyRef {
		out := make([][]PolicyRef, len(gs))
		for i, g := range gs {
			for _, p := range g {
				out[i] = append(out[i], p.ref)
			}
		}
		return out
	}
	prog.Admin = toRefs(groupByPriority(admin))
	if !prog.Isolated {
		prog.Baseline = toRefs(groupByPriority(baseline))
	}
	return prog
}

// mergePrefixes sorts prefixes and drops those contained in another.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Overlaps(p) {
			// Sorted by address then length: the earlier one contains p.
			continue
		}
		out = append(out, p)
	}
	return slices.Clip(out)
}
