package nftmodel

import (
	"crypto/sha256"
	"encoding/base32"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// fam is the address family a rule is restricted to (0: both).
type Fam uint8

const (
	FamAny Fam = 0
	Fam4   Fam = 4
	Fam6   Fam = 6
)

func (f Fam) suffix() string {
	if f == Fam6 {
		return "v6"
	}
	return "v4"
}

// Names of the fixed objects of the table.
const (
	chainEgress      = "egress"       // hook forward, priority filter
	chainIngress     = "ingress"      // hook forward, priority filter+10
	chainEgressLocal = "egress_local" // hook input, priority filter: pods → node
)

// vmap indexes: dispatch maps and pass maps, per direction and family.
const (
	vmEg4 = iota
	vmEg6
	vmIn4
	vmIn6
	vmEgPass4
	vmEgPass6
	vmInPass4
	vmInPass6
	NumVmaps
)

// VmapNames are the names of the verdict maps, by index (VmapIndex).
var VmapNames = [NumVmaps]string{"eg_v4", "eg_v6", "in_v4", "in_v6", "egp_v4", "egp_v6", "inp_v4", "inp_v6"}

// vmapFam is the address family of the map with index i.
func vmapFam(i int) Fam {
	if i%2 == 1 {
		return Fam6
	}
	return Fam4
}

// VmapIndex is the index of the dispatch map (pass: the pass map) of a
// direction and family.
func VmapIndex(dir policy.Direction, f Fam, pass bool) int {
	i := 0
	if dir == policy.Ingress {
		i = 2
	}
	if f == Fam6 {
		i++
	}
	if pass {
		i += 4
	}
	return i
}

// FQDNSetName returns the name of the kernel set of an FQDN rule for a family:
// a concatenated set (workload address . answer address) with timeouts, created
// by the Enforcer and filled by the resolver (ipset.KindAddrPair, Timeout: true).
func FQDNSetName(ruleID string, family ipset.Family) string {
	if family == ipset.IPv6 {
		return "fq_" + ruleID + "_v6"
	}
	return "fq_" + ruleID + "_v4"
}

// FQDNSetSpec returns the ipset.Spec of an FQDN rule's set.
func FQDNSetSpec(ruleID string, family ipset.Family) ipset.Spec {
	return ipset.Spec{Name: FQDNSetName(ruleID, family), Family: family, Kind: ipset.KindAddrPair, Timeout: true}
}

// DenySetName returns the name of the kernel set of the addresses egressd
// resolved itself for the exact names of a Deny rule (see
// policy.PlanRule.DenyNames): a plain address set with timeouts, created by
// the Enforcer with the rule and filled by the pre-resolver (package
// dnsproxy/preresolve; ipset.KindAddr, Timeout: true). The rule drops
// "ip daddr @fqd_<rule>_v4" for every pod it applies to, whether or not the
// pod looked the name up.
func DenySetName(ruleID string, family ipset.Family) string {
	if family == ipset.IPv6 {
		return "fqd_" + ruleID + "_v6"
	}
	return "fqd_" + ruleID + "_v4"
}

// HashName is a short digest of s for object names.
func HashName(s string) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return strconv.FormatUint(h.Sum64(), 36)
}

func dirTag(d policy.Direction) string {
	if d == policy.Ingress {
		return "i"
	}
	return "e"
}

// policyChain names the chains of a policy for a direction:
// kind "" (ordered, first match), "d" (deny-check), "a" (allow-check), "p"
// (pass-check), "nd" / "na" (namespaced deny / allow).
func policyChain(ref policy.PolicyRef, d policy.Direction, kind string) string {
	n := "pol_" + dirTag(d) + "_" + HashName(ref.String())
	if kind != "" {
		n += "_" + kind
	}
	return n
}

// restChain names the shared chain of a program's part after the Admin tier
// (namespaced policies, or Baseline groups, then the default verdict), keyed by
// restKey.
func RestChain(d policy.Direction, key string) string {
	return "prog_" + dirTag(d) + "_" + HashName(key)
}

// adminChain names the shared chain of a program's Admin groups, keyed by
// adminKey; it ends in the pass map (the workload's own rest chain).
func AdminChain(d policy.Direction, key string) string {
	return "adm_" + dirTag(d) + "_" + HashName(key)
}

func groupsKey(tag string, gs [][]policy.PolicyRef) string {
	var b strings.Builder
	for _, g := range gs {
		b.WriteString(tag)
		for _, r := range g {
			b.WriteString(r.String())
			b.WriteByte(',')
		}
	}
	return b.String()
}

// adminKey and restKey split Program.Key into its two shared parts.
func AdminKey(p *policy.Program) string { return groupsKey("A|", p.Admin) }

// RestKey is the key of a program's part after the Admin tier (RestChain).
func RestKey(p *policy.Program) string {
	if p.Isolated {
		var b strings.Builder
		b.WriteString("N|")
		for _, r := range p.Namespaced {
			b.WriteString(r.String())
			b.WriteByte(',')
		}
		return b.String()
	}
	return groupsKey("B|", p.Baseline)
}

// contentName names a set by a digest of its content: rules with equal
// prefix lists (or named-port lists) share one set.
func contentName(prefix string, f Fam, content string) string {
	h := sha256.Sum256([]byte(content))
	return prefix + strings.TrimPrefix(f.suffix(), "v") + "_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:10]))
}

// --- rule model -------------------------------------------------------------

type matchKind uint8

const (
	mAddrSet   matchKind = iota + 1 // ip saddr|daddr @set
	mFQDN                           // ip saddr . ip daddr @set
	mNamedPort                      // ip daddr . meta l4proto . th dport @set
	mProto                          // meta l4proto P
	mDport                          // th dport lo-hi
	mCtState                        // ct state <bits>
	mDaddr                          // ip daddr == addr
	mAddrRange                      // ip saddr|daddr lo[-hi] (a rule's single range, inline)
	mPortSet                        // meta l4proto . th dport { P . lo-hi, ... } (anonymous set)
)

// portItem is one element of a rule's port list.
type portItem struct {
	proto  uint8
	lo, hi uint16
}

// Match is one match of a rule (its kind says which fields count).
type Match struct {
	kind  matchKind
	src   bool // mAddrSet, mAddrRange: saddr (else daddr)
	set   string
	proto uint8
	lo    uint16
	hi    uint16
	ct    uint32
	addr  netip.Addr // mDaddr; mAddrRange: first address
	last  netip.Addr // mAddrRange: last address
	ports []portItem // mPortSet
}

// VerdictKind is the verdict of a rule or a verdict-map element.
type VerdictKind uint8

const (
	VAccept VerdictKind = iota + 1
	VDrop
	VReturn
	VJump
	VGoto
	VVmap // ip saddr|daddr vmap @set
)

// Rule is one nft rule: a family (FamAny: both), matches, a verdict.
type Rule struct {
	Fam     Fam
	m       []Match
	v       VerdictKind
	target  string // chain (jump/goto) or map (vmap)
	vmapSrc bool
	counter bool
	log     bool   // log group before the verdict (when the enforcer has a group)
	comment string // nft comment: rule reference (text only)
}

// BaseHook makes a chain a base chain: hook input or forward, priority.
type BaseHook struct {
	input    bool // hook input (else forward)
	priority int32
}

// Chain is a chain of the table with its rules and their text (Text: the
// fingerprint by which a changed chain is rewritten).
type Chain struct {
	Name  string
	Base  *BaseHook
	Rules []Rule
	Text  string // rendered rules, the fingerprint
}

// SetKind is what a named set holds.
type SetKind uint8

const (
	SkPrefix    SetKind = iota + 1 // interval set of addresses
	SkNamedPort                    // addr . inet_proto . inet_service
	SkFQDN                         // addr . addr, timeout
	SkFQDNDeny                     // addr, timeout (a Deny rule's pre-resolved names)
)

// Set is a named set of the table (Kind says which fields count).
type Set struct {
	Name   string
	Kind   SetKind
	Fam    Fam
	ranges []AddrRange
	nports []policy.NamedPortTarget
}

// VmapTarget is the value of a verdict-map element.
type VmapTarget struct {
	Kind  VerdictKind // VJump, VGoto, VDrop, VAccept
	Chain string
}
