package main

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/egressd/egressd/policy"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*l = append(*l, v)
	return nil
}

// choice is a string flag restricted to a set of values (case-insensitive).
type choice struct {
	value   string
	allowed []string
}

func newChoice(def string, allowed ...string) *choice {
	return &choice{value: def, allowed: allowed}
}

func (c *choice) String() string { return c.value }
func (c *choice) Set(v string) error {
	for _, a := range c.allowed {
		if strings.EqualFold(a, v) {
			c.value = a
			return nil
		}
	}
	return fmt.Errorf("want one of %s", strings.Join(c.allowed, ", "))
}

// engineFlags are the node settings the engine evaluates with.
type engineFlags struct {
	defaultVerdict *choice
	lookups        *choice
	clusterDomain  string
	searchDomains  stringList
}

func addEngineFlags(fs *flagSet) *engineFlags {
	e := &engineFlags{
		defaultVerdict: newChoice(string(policy.Allow), string(policy.Allow), string(policy.Deny)),
		lookups:        newChoice(string(policy.LookupsObserve), string(policy.LookupsObserve), string(policy.LookupsEnforce)),
	}
	fs.Var(e.defaultVerdict, "default-verdict", "node default `verdict` for traffic no tier decided: Allow or Deny")
	fs.Var(e.lookups, "lookups", "node lookup `mode`: Observe, or Enforce to block lookups no Allow FQDN rule matches\nfor workloads whose egress is restricted")
	fs.StringVar(&e.clusterDomain, "cluster-domain", "cluster.local", "cluster DNS `domain`; names inside it are never blocked by FQDN rules")
	fs.Var(&e.searchDomains, "search-domain", "extra DNS `suffix` never blocked by FQDN rules (repeatable)")
	return e
}

func (e *engineFlags) options() policy.Options {
	return policy.Options{
		DefaultVerdict: policy.Verdict(e.defaultVerdict.value),
		Lookups:        policy.LookupMode(e.lookups.value),
		ClusterDomain:  e.clusterDomain,
		SearchDomains:  e.searchDomains,
	}
}

// parseProtocol parses TCP, UDP or SCTP (case-insensitive).
func parseProtocol(s string) (policy.Protocol, error) {
	for _, p := range policy.Protocols {
		if strings.EqualFold(string(p), strings.TrimSpace(s)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("protocol %q: want TCP, UDP or SCTP", s)
}

// parseProtocols parses a comma-separated list into policy.Protocols order,
// without duplicates.
func parseProtocols(s string) ([]policy.Protocol, error) {
	seen := map[policy.Protocol]bool{}
	for _, f := range strings.Split(s, ",") {
		p, err := parseProtocol(f)
		if err != nil {
			return nil, err
		}
		seen[p] = true
	}
	var out []policy.Protocol
	for _, p := range policy.Protocols {
		if seen[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// parsePort parses a port number 1-65535.
func parsePort(s string) (int32, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want a number from 1 to 65535", s)
	}
	return int32(n), nil
}

// parsePorts parses a comma-separated list of ports and ranges (80,81,8000-8002),
// sorted without duplicates.
func parsePorts(s string) ([]int32, error) {
	seen := map[int32]bool{}
	for _, f := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(f, "-")
		first, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return nil, err
			}
			if last < first || last-first >= 1024 {
				return nil, fmt.Errorf("port range %q: want first <= last and at most 1024 ports", f)
			}
		}
		for p := first; p <= last; p++ {
			seen[p] = true
		}
	}
	out := make([]int32, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// resolvedList is the repeatable --resolved NAME=IP,IP flag.
type resolvedList []resolvedEntry

type resolvedEntry struct {
	name string
	ips  []netip.Addr
}

func (l *resolvedList) String() string {
	var parts []string
	for _, e := range *l {
		ips := make([]string, len(e.ips))
		for i, ip := range e.ips {
			ips[i] = ip.String()
		}
		parts = append(parts, e.name+"="+strings.Join(ips, ","))
	}
	return strings.Join(parts, " ")
}

func (l *resolvedList) Set(v string) error {
	name, list, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(name) == "" || list == "" {
		return fmt.Errorf("want NAME=IP[,IP...]")
	}
	e := resolvedEntry{name: strings.TrimSpace(name)}
	for _, f := range strings.Split(list, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		e.ips = append(e.ips, ip.Unmap())
	}
	*l = append(*l, e)
	return nil
}

// family is ipv4 or ipv6.
func familyOf(ip netip.Addr) string {
	if ip.Unmap().Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// firstIP returns the workload's first address of the family.
func firstIP(w policy.Workload, family string) (netip.Addr, bool) {
	for _, ip := range w.IPs {
		if familyOf(ip) == family {
			return ip, true
		}
	}
	return netip.Addr{}, false
}
