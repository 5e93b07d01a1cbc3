package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/egressd/egressd/egress/doh"
	"github.com/egressd/egressd/policy"
)

// sideDoorFlags are the agent's side-door settings (egressd flags of the same
// names, docs/egressd.md "DNS side doors"), so explain says what the kernel
// does with a pod's DNS that does not go to egressd.
type sideDoorFlags struct {
	dnsBypass    *choice
	exempt       stringList
	exemptSet    bool
	encrypted    *choice
	dohFile      string
	resolvers    stringList
	resolverAddr []netip.AddrPort
	list         doh.List
}

func addSideDoorFlags(fs *flagSet) *sideDoorFlags {
	s := &sideDoorFlags{
		dnsBypass: newChoice(string(policy.DNSBypassRedirect), string(policy.DNSBypassRedirect), string(policy.DNSBypassDrop), string(policy.DNSBypassAllow)),
		encrypted: newChoice("Drop", "Drop", "Allow"),
	}
	fs.Var(s.dnsBypass, "dns-bypass", "node `action` for plain DNS to other resolvers (egressd --dns-bypass): Redirect, Drop or Allow")
	fs.Func("dns-bypass-exempt-namespaces", "`namespaces` (comma-separated) whose pods default to dnsBypass Allow (default kube-system; empty: none)", func(v string) error {
		s.exemptSet = true
		s.exempt = nil
		for _, ns := range strings.Split(v, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				s.exempt = append(s.exempt, ns)
			}
		}
		return nil
	})
	fs.Var(s.encrypted, "encrypted-dns", "node `action` for DoT, DoQ and DoH to known resolvers (egressd --encrypted-dns): Drop or Allow")
	fs.StringVar(&s.dohFile, "doh-resolvers", "", "DoH resolver list `FILE` (egressd --doh-resolvers; default: the list shipped with egressd)")
	fs.Var(&s.resolvers, "resolver", "egressd's DNS listen `ADDR` (egressd --listen; repeatable; default 169.254.20.10:53)")
	return s
}

// load checks the flags and reads the DoH list.
func (s *sideDoorFlags) load() error {
	list := []string(s.resolvers)
	if len(list) == 0 {
		list = []string{"169.254.20.10:53"}
	}
	for _, r := range list {
		ap, err := netip.ParseAddrPort(r)
		if err != nil {
			return fmt.Errorf("--resolver %q: want address:port", r)
		}
		s.resolverAddr = append(s.resolverAddr, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	s.list = doh.Default()
	if s.dohFile != "" {
		f, err := os.Open(s.dohFile)
		if err != nil {
			return fmt.Errorf("--doh-resolvers: %w", err)
		}
		defer f.Close()
		if s.list, err = doh.Parse(f); err != nil {
			return fmt.Errorf("--doh-resolvers: %s: %w", s.dohFile, err)
		}
	}
	return nil
}

func (s *sideDoorFlags) node() policy.DNSBypassNode {
	exempt := []string(s.exempt)
	if !s.exemptSet {
		exempt = []string{"kube-system"}
	}
	return policy.DNSBypassNode{Default: policy.DNSBypassAction(s.dnsBypass.value), ExemptNamespaces: exempt, AllowEncrypted: s.encrypted.value == "Allow"}
}

// redirectTarget is the resolver address of dst's family (invalid: none).
func (s *sideDoorFlags) redirectTarget(dst netip.Addr) netip.AddrPort {
	for _, ap := range s.resolverAddr {
		if ap.Addr().Is4() == dst.Unmap().Is4() {
			return ap
		}
	}
	return netip.AddrPort{}
}

// decide is what the side-door rules do with c from workload src.
func (s *sideDoorFlags) decide(m *model, src policy.WorkloadKey, c policy.Connection) (policy.SideDoorDecision, netip.AddrPort) {
	n := s.node()
	set := n.Effective(src.Namespace, m.engine.DNSBypass(src))
	isSelf := func(a netip.Addr) bool {
		for _, ap := range s.resolverAddr {
			if ap.Addr() == a.Unmap() {
				return true
			}
		}
		return false
	}
	to := s.redirectTarget(c.Dst)
	return policy.DecideSideDoor(c, set, n, isSelf, s.list.Contains, to.IsValid()), to
}

// sideDoorJSON is the "sideDoor" member of explain's JSON output.
type sideDoorJSON struct {
	Door     string `json:"door"`
	Verdict  string `json:"verdict"`
	Reason   string `json:"reason"`
	Policy   string `json:"policy,omitempty"`
	Resolver string `json:"resolver,omitempty"`
	To       string `json:"to,omitempty"`
}

func (s *sideDoorFlags) json(d policy.SideDoorDecision, c policy.Connection, to netip.AddrPort) *sideDoorJSON {
	j := &sideDoorJSON{Door: string(d.Door), Verdict: string(d.Verdict), Reason: d.Reason}
	if d.Setting.Policy.Name != "" {
		j.Policy = d.Setting.Policy.String()
	}
	if name, ok := s.list.NameOf(c.Dst); ok && d.Door == policy.SideDoorDoH {
		j.Resolver = name
	}
	if d.Verdict == policy.SideDoorRedirected {
		j.To = to.String()
	}
	return j
}

// printSideDoor writes the side-door lines of the text output; it reports
// whether the kernel acts before the policy tiers (then they are not reached).
func (s *sideDoorFlags) printSideDoor(w io.Writer, d policy.SideDoorDecision, c policy.Connection, to netip.AddrPort) bool {
	switch d.Verdict {
	case policy.SideDoorRedirected:
		fmt.Fprintf(w, "Verdict:     Redirected to egressd (%s)\n", to)
		fmt.Fprintf(w, "Kernel:      %s: DNAT to %s before any policy (table inet egressd, chain sd_dns_redirect);\n", d.Reason, to)
		fmt.Fprintf(w, "             egressd answers and its name policy decides the lookup (the audit event and span carry the original destination %s)\n",
			netip.AddrPortFrom(c.Dst, uint16(c.Port)))
		return true
	case policy.SideDoorDropped:
		fmt.Fprintf(w, "Verdict:     Deny\n")
		what := d.Reason
		if name, ok := s.list.NameOf(c.Dst); ok && d.Door == policy.SideDoorDoH {
			what += fmt.Sprintf("; %s is %s in the DoH list", c.Dst, name)
		}
		fmt.Fprintf(w, "Kernel:      dropped before any policy (table inet egressd, chain sd_filter; event dns.bypass.blocked): %s\n", what)
		return true
	}
	if d.Door != policy.SideDoorNone && d.Reason != "" {
		fmt.Fprintf(w, "Side door:   %s not redirected or dropped: %s\n", d.Door, d.Reason)
	}
	return false
}
