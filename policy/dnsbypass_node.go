package policy

import (
	"fmt"
	"net/netip"
	"slices"
)

// DNSBypassNode is the node's side of the DNS side doors (egressd flags): the
// action for workloads no ClusterFirewallPolicy sets spec.dnsBypass for, and
// whether encrypted DNS is dropped.
type DNSBypassNode struct {
	// Default is the action when no policy sets one (empty: Redirect).
	Default DNSBypassAction
	// ExemptNamespaces are namespaces whose workloads default to Allow (a
	// namespace running its own resolver, e.g. kube-system with CoreDNS,
	// whose upstream queries must not loop back through egressd).
	ExemptNamespaces []string
	// AllowEncrypted leaves DoT, DoQ and DoH alone (default: dropped for
	// every workload whose action is Redirect or Drop).
	AllowEncrypted bool
}

// Effective returns the setting that applies to a workload of namespace ns
// given what its policies set (PlanWorkload.DNSBypass, Engine.DNSBypass):
// the policy's action, else Allow in an exempt namespace, else the node
// default.
func (n DNSBypassNode) Effective(ns string, s DNSBypassSetting) DNSBypassSetting {
	if s.Action != "" {
		return s
	}
	switch {
	case slices.Contains(n.ExemptNamespaces, ns):
		s.Action = DNSBypassAllow
	case n.Default != "":
		s.Action = n.Default
	default:
		s.Action = DNSBypassRedirect
	}
	return s
}

// Validate checks the node settings.
func (n DNSBypassNode) Validate() error {
	switch n.Default {
	case "", DNSBypassRedirect, DNSBypassDrop, DNSBypassAllow:
		return nil
	}
	return fmt.Errorf("dns bypass action %q: want Redirect, Drop or Allow", shorten(string(n.Default)))
}

// DNSPort is the plain DNS port (UDP and TCP) that Redirect and Drop govern.
const DNSPort = 53

// EncryptedDNSPort is DNS over TLS (TCP) and DNS over QUIC (UDP).
const EncryptedDNSPort = 853

// SideDoor names the way a connection would bypass egressd's name policy.
type SideDoor string

const (
	// SideDoorNone: the connection is not a DNS side door (or is exempt).
	SideDoorNone SideDoor = ""
	// SideDoorDNS is plain DNS (port 53) to a resolver other than egressd.
	SideDoorDNS SideDoor = "dns"
	// SideDoorDoT is DNS over TLS (TCP 853).
	SideDoorDoT SideDoor = "dot"
	// SideDoorDoQ is DNS over QUIC (UDP 853).
	SideDoorDoQ SideDoor = "doq"
	// SideDoorDoH is a connection to a known DoH resolver address (any TCP or
	// UDP port but 53).
	SideDoorDoH SideDoor = "doh"
)

// SideDoorVerdict is what the kernel does with a side-door connection.
type SideDoorVerdict string

const (
	// SideDoorPass: not a side door, exempt, or allowed; the policy tiers decide.
	SideDoorPass SideDoorVerdict = "Pass"
	// SideDoorRedirected: sent to egressd (plain DNS under Redirect).
	SideDoorRedirected SideDoorVerdict = "Redirected"
	// SideDoorDropped: dropped before any policy (dns.bypass.blocked).
	SideDoorDropped SideDoorVerdict = "Dropped"
)

// SideDoorDecision says what the kernel does with a pod's connection with
// respect to the DNS side doors, and why.
type SideDoorDecision struct {
	Door    SideDoor
	Verdict SideDoorVerdict
	// Setting is the effective setting of the source workload.
	Setting DNSBypassSetting
	// Reason explains the verdict in words.
	Reason string
}

// DecideSideDoor is the reference model of the side-door rules (egress
// applies the same in nftables): c from a workload whose effective setting is
// s, isSelf reports egressd's own addresses, isDoH the known DoH resolver
// addresses, redirect6/redirect4 whether egressd listens on an address of the
// family (without one, Redirect drops).
func DecideSideDoor(c Connection, s DNSBypassSetting, n DNSBypassNode, isSelf, isDoH func(netip.Addr) bool, canRedirect bool) SideDoorDecision {
	d := SideDoorDecision{Verdict: SideDoorPass, Setting: s}
	if c.Protocol != ProtocolTCP && c.Protocol != ProtocolUDP {
		return d
	}
	switch {
	case c.Port == DNSPort:
		d.Door = SideDoorDNS
	case c.Port == EncryptedDNSPort && c.Protocol == ProtocolTCP:
		d.Door = SideDoorDoT
	case c.Port == EncryptedDNSPort:
		d.Door = SideDoorDoQ
	case isDoH != nil && isDoH(c.Dst):
		d.Door = SideDoorDoH
	default:
		return d
	}
	switch {
	case isSelf != nil && isSelf(c.Dst):
		d.Door, d.Reason = SideDoorNone, "egressd's own address"
		return d
	case s.Action == DNSBypassAllow:
		d.Reason = fmt.Sprintf("dnsBypass Allow (%s)", settingSource(s))
		return d
	case s.Exempt(c.Dst):
		d.Reason = fmt.Sprintf("resolver exempted by dnsBypass.resolvers of %s", s.Policy)
		return d
	}
	if d.Door != SideDoorDNS {
		if n.AllowEncrypted {
			d.Reason = "encrypted DNS allowed on this node (--encrypted-dns=Allow)"
			return d
		}
		d.Verdict, d.Reason = SideDoorDropped, fmt.Sprintf("encrypted DNS (%s) is dropped (%s)", d.Door, settingSource(s))
		return d
	}
	if s.Action == DNSBypassRedirect && canRedirect {
		d.Verdict, d.Reason = SideDoorRedirected, fmt.Sprintf("plain DNS to another resolver is redirected to egressd (%s)", settingSource(s))
		return d
	}
	d.Verdict = SideDoorDropped
	if s.Action == DNSBypassRedirect {
		d.Reason = "plain DNS to another resolver; egressd listens on no address of this family, so it is dropped"
	} else {
		d.Reason = fmt.Sprintf("plain DNS to another resolver is dropped (%s)", settingSource(s))
	}
	return d
}

func settingSource(s DNSBypassSetting) string {
	if s.Policy.Name != "" {
		return "dnsBypass " + string(s.Action) + " of " + s.Policy.String()
	}
	return "node default " + string(s.Action)
}
