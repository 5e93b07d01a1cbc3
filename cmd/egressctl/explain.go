package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/policy"
)

const explainHelp = `
Explain the verdict on one connection, or on one DNS lookup, with the reference
evaluator the agent enforces (policy.Engine).

The source is a pod of the workloads file (--from NS/POD). The destination is one of:
  --to NS/POD     a pod: its first address of the source's family (see --family)
  --to-ip IP      any address (a pod's, or one outside the cluster); the source
                  address is the source pod's first address of that family
  --to-name NAME  a DNS lookup of NAME by the source (DecideLookup); no port

A connection is decided in both directions: egress at the source, then ingress at
the destination (only when the destination is a known pod). Text output shows
both, the rule that decided each, and what Audit-mode policies would have decided.
JSON output is the deciding direction:
  {"verdict": "Allow"|"Deny", "tier": ..., "policy": ..., "rule": ..., "reason": ...}
plus "audit" (same keys) when Audit-mode policies would have decided otherwise,
and for a connection "egress" and "ingress" (same keys), each direction.
Empty strings mean "not applicable". Reasons: rule, isolated, no-policy,
not-a-workload, self, node-resolver, node-proxy, and for lookups cluster-domain,
lookups-enforced, no-matching-fqdn, invalid-name.

What the kernel accepts before any policy is allowed with its own reason: a pod
reaching itself (self), TCP/UDP to egressd's resolver (node-resolver: --resolver)
and to its L7 proxies (node-proxy: --proxy).

FQDN rules match an address only after the source resolved a matching name to it
through the node resolver: record such lookups with --resolved NAME=IP[,IP...].

DNS side doors: before the tiers, the kernel redirects a pod's plain DNS (port 53)
for any resolver but egressd to egressd, and drops DoT/DoQ (853) and connections to
known DoH resolvers (docs/policy.md "DNS side doors"). Explain says so first, with
the node settings of --dns-bypass, --dns-bypass-exempt-namespaces, --encrypted-dns,
--doh-resolvers and --resolver (egressd's own flags): "Verdict: Redirected to
egressd (ADDR)" or "Verdict: Deny" with the door; JSON then has verdict "Redirect"
(reason dns-redirect) or "Deny" (reason dns-bypass-blocked), the dnsBypass policy if
one decided, and "sideDoor": {"door", "verdict", "reason", "policy", "resolver",
"to"}, which is also present (verdict "Pass") when an exemption lets the connection
through to the tiers.

Exit status: 0 whatever the verdict, 1 on invalid input (invalid policies,
unreadable files, unknown pods), 2 on a usage error.`

// explainJSON is the JSON output of explain.
type explainJSON struct {
	Verdict string       `json:"verdict"`
	Tier    string       `json:"tier"`
	Policy  string       `json:"policy"`
	Rule    string       `json:"rule"`
	Reason  string       `json:"reason"`
	Audit   *explainJSON `json:"audit,omitempty"`
	// SideDoor is set when the connection is DNS that bypasses egressd
	// (sidedoors.go).
	SideDoor *sideDoorJSON `json:"sideDoor,omitempty"`
	// Egress and Ingress are both directions of a connection (verdict, tier,
	// policy, rule, reason): the rule that allowed the egress side is named
	// even when the ingress side decided.
	Egress  *explainJSON `json:"egress,omitempty"`
	Ingress *explainJSON `json:"ingress,omitempty"`
}

func outcomeJSON(o policy.Outcome) *explainJSON {
	return &explainJSON{Verdict: string(o.Verdict), Tier: string(o.Tier), Policy: o.Policy.String(), Rule: o.Rule, Reason: o.Reason}
}

// directionJSON is one direction of a decision.
func directionJSON(d policy.DirectionDecision) *explainJSON {
	return outcomeJSON(d.Outcome)
}

// addrPortList is a repeatable address:port flag.
type addrPortList []netip.AddrPort

func (l *addrPortList) String() string { return fmt.Sprint([]netip.AddrPort(*l)) }

func (l *addrPortList) Set(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q: want address:port", s)
	}
	*l = append(*l, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	return nil
}

type explainFlags struct {
	paths     stringList
	workloads string
	from      string
	to        string
	toIP      string
	toName    string
	port      int
	protocol  string
	family    *choice
	resolved  resolvedList
	out       *choice
	engine    *engineFlags
	sideDoors *sideDoorFlags // sidedoors.go
	proxies   addrPortList
}

func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("explain",
		"-f PATH --workloads FILE --from NS/POD (--to NS/POD | --to-ip IP | --to-name NAME) [--port N] [--protocol TCP] [-o text|json]",
		explainHelp)
	f := explainFlags{family: newChoice("", "ipv4", "ipv6"), out: newChoice("text", "text", "json")}
	fs.Var(&f.paths, "f", "policy file or directory `PATH` (repeatable)")
	fs.StringVar(&f.workloads, "workloads", "", "workloads `FILE`: namespaces and pods with labels, IPs and named ports")
	fs.StringVar(&f.from, "from", "", "source pod `NS/POD`")
	fs.StringVar(&f.to, "to", "", "destination pod `NS/POD`")
	fs.StringVar(&f.toIP, "to-ip", "", "destination `IP` address")
	fs.StringVar(&f.toName, "to-name", "", "DNS `NAME` looked up by the source (explains the lookup decision)")
	fs.IntVar(&f.port, "port", 0, "destination `port`, 1-65535 (required with --to and --to-ip)")
	fs.StringVar(&f.protocol, "protocol", "TCP", "`protocol`: TCP, UDP or SCTP")
	fs.Var(f.family, "family", "address `family` with --to: ipv4 or ipv6 (default: the family of the source's first IP)")
	fs.Var(&f.resolved, "resolved", "`NAME=IP[,IP...]`: the source resolved NAME to these IPs (repeatable), for FQDN rules")
	fs.Var(f.out, "o", "output `format`: text or json")
	f.engine = addEngineFlags(fs)
	f.sideDoors = addSideDoorFlags(fs)
	fs.Var(&f.proxies, "proxy", "an egressd L7 proxy's listen `ADDR` (egressd --http-proxy, the transparent proxy's listeners; repeatable): pods always reach it")
	if code, done := parse(fs, args, stdout, stderr); done {
		return code
	}
	if err := f.sideDoors.load(); err != nil {
		return usageError(fs, stderr, "%v", err)
	}
	if fs.NArg() > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
	}
	switch {
	case len(f.paths) == 0:
		return usageError(fs, stderr, "no policy files: give -f PATH")
	case f.workloads == "":
		return usageError(fs, stderr, "no workloads file: give --workloads FILE")
	case f.from == "":
		return usageError(fs, stderr, "no source: give --from NS/POD")
	}
	from, err := policy.ParseWorkloadKey(f.from)
	if err != nil {
		return usageError(fs, stderr, "--from: %v", err)
	}
	n := 0
	for _, s := range []string{f.to, f.toIP, f.toName} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return usageError(fs, stderr, "give exactly one of --to, --to-ip and --to-name")
	}
	var to policy.WorkloadKey
	var toIP netip.Addr
	var proto policy.Protocol
	switch {
	case f.to != "":
		if to, err = policy.ParseWorkloadKey(f.to); err != nil {
			return usageError(fs, stderr, "--to: %v", err)
		}
	case f.toIP != "":
		if toIP, err = netip.ParseAddr(f.toIP); err != nil {
			return usageError(fs, stderr, "--to-ip: %v", err)
		}
		toIP = toIP.Unmap()
		if f.family.value != "" {
			return usageError(fs, stderr, "--family applies to --to only (the family of --to-ip is its own)")
		}
	}
	if f.toName != "" {
		if isSet(fs, "port") || isSet(fs, "protocol") || f.family.value != "" {
			return usageError(fs, stderr, "--port, --protocol and --family do not apply to --to-name")
		}
	} else {
		if f.port < 1 || f.port > 65535 {
			return usageError(fs, stderr, "--port: want a number from 1 to 65535")
		}
		if proto, err = parseProtocol(f.protocol); err != nil {
			return usageError(fs, stderr, "--protocol: %v", err)
		}
	}

	opts := f.engine.options()
	opts.NodeResolvers, opts.NodeProxies = f.sideDoors.resolverAddr, f.proxies
	m, problems, err := loadModel(f.paths, f.workloads, opts)
	if err != nil {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		return failf(fs, stderr, "%v", err)
	}
	src, ok := m.store.Workload(from)
	if !ok {
		return failf(fs, stderr, "--from: no pod %s in %s", from, f.workloads)
	}
	for _, r := range f.resolved {
		m.store.RecordLookup(from, r.name, r.ips...)
	}

	if f.toName != "" {
		d := m.engine.DecideLookup(from, f.toName)
		if f.out.value == "json" {
			res := outcomeJSON(d.Outcome)
			if d.Audit != nil {
				res.Audit = outcomeJSON(*d.Audit)
			}
			return writeJSON(fs, stdout, stderr, res)
		}
		printLookup(stdout, m, d)
		return exitOK
	}

	// A connection: pick the addresses.
	var srcIP netip.Addr
	var dst policy.Workload
	switch {
	case f.to != "":
		if dst, ok = m.store.Workload(to); !ok {
			return failf(fs, stderr, "--to: no pod %s in %s", to, f.workloads)
		}
		family := f.family.value
		if family == "" {
			if len(src.IPs) == 0 {
				return failf(fs, stderr, "--from: pod %s has no IP address", from)
			}
			family = familyOf(src.IPs[0])
		}
		if srcIP, ok = firstIP(src, family); !ok {
			return failf(fs, stderr, "--from: pod %s has no %s address", from, family)
		}
		if toIP, ok = firstIP(dst, family); !ok {
			return failf(fs, stderr, "--to: pod %s has no %s address (the source's family)", to, family)
		}
	default:
		if srcIP, ok = firstIP(src, familyOf(toIP)); !ok {
			return failf(fs, stderr, "--from: pod %s has no %s address to reach %s from", from, familyOf(toIP), toIP)
		}
	}
	conn := policy.Connection{Src: srcIP, Dst: toIP, Port: int32(f.port), Protocol: proto}
	d := m.engine.Decide(conn)
	sd, sdTo := f.sideDoors.decide(m, from, conn)
	if f.out.value == "json" {
		deciding := d.Deciding()
		res := outcomeJSON(deciding.Outcome)
		res.Verdict = string(d.Verdict)
		if would, ok := auditDecision(d); ok {
			wd := would.Deciding()
			res.Audit = outcomeJSON(wd.Outcome)
			res.Audit.Verdict = string(would.Verdict)
		}
		res.Egress, res.Ingress = directionJSON(d.Egress), directionJSON(d.Ingress)
		if sd.Door != policy.SideDoorNone {
			res.SideDoor = f.sideDoors.json(sd, conn, sdTo)
			switch sd.Verdict { // the kernel acts before the tiers
			case policy.SideDoorDropped:
				res = &explainJSON{Verdict: string(policy.Deny), Policy: res.SideDoor.Policy, Reason: "dns-bypass-blocked", SideDoor: res.SideDoor}
			case policy.SideDoorRedirected:
				res = &explainJSON{Verdict: "Redirect", Policy: res.SideDoor.Policy, Reason: "dns-redirect", SideDoor: res.SideDoor}
			}
		}
		return writeJSON(fs, stdout, stderr, res)
	}
	if f.sideDoors.printSideDoor(stdout, sd, conn, sdTo) {
		fmt.Fprintf(stdout, "\nPolicy tiers (not reached for this connection):\n")
	}
	printConnection(stdout, m, conn, d, f.resolved)
	return exitOK
}

func isSet(fs *flagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func writeJSON(fs *flagSet, stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return failf(fs, stderr, "%v", err)
	}
	return exitOK
}

// auditDecision is what the connection's verdict would be if Audit-mode
// policies were enforced; ok is false when no Audit-mode policy changes a direction.
func auditDecision(d policy.Decision) (policy.Decision, bool) {
	if d.Egress.Audit == nil && d.Ingress.Audit == nil {
		return d, false
	}
	w := d
	if d.Egress.Audit != nil {
		w.Egress.Outcome = *d.Egress.Audit
	}
	if d.Ingress.Audit != nil {
		w.Ingress.Outcome = *d.Ingress.Audit
	}
	w.Egress.Audit, w.Ingress.Audit = nil, nil
	w.Verdict = policy.Allow
	if w.Egress.Verdict == policy.Deny || w.Ingress.Verdict == policy.Deny {
		w.Verdict = policy.Deny
	}
	return w, true
}

// decidingDirection names the direction policy.Decision.Deciding returns:
// the first that denied, else ingress when it applies, else egress.
func decidingDirection(d policy.Decision) string {
	switch {
	case d.Egress.Applies && d.Egress.Verdict == policy.Deny:
		return "egress"
	case d.Ingress.Applies:
		return "ingress"
	}
	return "egress"
}

// endpointName is "ns/pod (ip)" or the bare IP.
func endpointName(s *policy.Store, ip netip.Addr) string {
	if k, ok := s.WorkloadByIP(ip); ok {
		return fmt.Sprintf("%s (%s)", k, ip)
	}
	return ip.String()
}

func printConnection(w io.Writer, m *model, c policy.Connection, d policy.Decision, resolved resolvedList) {
	fmt.Fprintf(w, "Verdict:     %s\n", d.Verdict)
	fmt.Fprintf(w, "Connection:  %s -> %s %s/%d\n", endpointName(m.store, c.Src), endpointName(m.store, c.Dst), c.Protocol, c.Port)
	var names []string
	for _, r := range resolved {
		for _, ip := range r.ips {
			if ip == c.Dst {
				names = append(names, r.name)
			}
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(w, "Resolved:    %s resolved %s to %s (FQDN rules can match it)\n", d.Egress.Workload, strings.Join(names, ", "), c.Dst)
	}
	fmt.Fprintf(w, "Decided by:  %s\n", decidingDirection(d))
	printDirection(w, "Egress", c.Src, d.Egress)
	printDirection(w, "Ingress", c.Dst, d.Ingress)
	if would, ok := auditDecision(d); ok {
		fmt.Fprintf(w, "Audit:       would be %s if Audit-mode policies were enforced\n", would.Verdict)
	}
}

func printDirection(w io.Writer, title string, ip netip.Addr, d policy.DirectionDecision) {
	fmt.Fprintln(w)
	if !d.Applies {
		fmt.Fprintf(w, "%s: not enforced (%s is not a known workload)\n", title, ip)
		return
	}
	fmt.Fprintf(w, "%s at %s: %s\n", title, d.Workload, d.Verdict)
	printOutcome(w, "  ", strings.ToLower(title), d.Outcome)
	if d.Audit != nil {
		fmt.Fprintf(w, "  audit:     would %s: %s\n", d.Audit.Verdict, summary(strings.ToLower(title), *d.Audit))
	}
}

func printOutcome(w io.Writer, indent, dir string, o policy.Outcome) {
	if o.Tier != "" {
		fmt.Fprintf(w, "%stier:      %s\n", indent, o.Tier)
	}
	if p := o.Policy.String(); p != "" {
		fmt.Fprintf(w, "%spolicy:    %s\n", indent, p)
	}
	if o.Rule != "" {
		fmt.Fprintf(w, "%srule:      %s (%s)\n", indent, o.Rule, actionName(o))
	}
	fmt.Fprintf(w, "%sreason:    %s: %s\n", indent, o.Reason, describe(dir, o))
}

// describe explains an outcome in a sentence.
func describe(dir string, o policy.Outcome) string {
	switch o.Reason {
	case policy.ReasonRule:
		switch {
		case o.Tier == policy.TierNamespaced && o.Action == policy.ActionDeny:
			return "a Deny rule of a namespaced policy matches (Deny beats Allow in the tier)"
		case o.Tier == policy.TierNamespaced:
			return "an Allow rule matches and no Deny rule of the namespaced policies does"
		}
		if o.Tier == policy.TierBaseline && o.Action == policy.ActionPass {
			return fmt.Sprintf("the first matching rule of the Baseline tier (by priority, then rule order) is a Pass: the rest of the tier is skipped and the node default (%s) decides", o.Verdict)
		}
		return fmt.Sprintf("the first matching rule of the %s tier (by priority, then rule order; at equal priority Deny beats Allow beats Pass, whatever the kind) has action %s", o.Tier, actionName(o))
	case policy.ReasonIsolated:
		return fmt.Sprintf("%s selects the pod for %s (isolated) and no rule of the namespaced policies allows this", o.Policy, dir)
	case policy.ReasonNotSelected:
		return fmt.Sprintf("no policy decided %s for this pod; node default %s", dir, o.Verdict)
	case policy.ReasonNotWorkload:
		return "not a known workload: not enforced"
	case policy.ReasonSelf:
		return "a pod reaching itself: the traffic stays inside the pod (loopback) and never reaches the node's rules"
	case policy.ReasonNodeResolver:
		return "TCP/UDP to egressd's resolver (--resolver): the kernel accepts it before any policy (table inet egressd, chain egress_local)"
	case policy.ReasonNodeProxy:
		return "TCP/UDP to an egressd L7 proxy (--proxy): the kernel accepts it before any policy (table inet egressd, chain egress_local)"
	case policy.ReasonClusterDomain:
		return "the name is inside the cluster domain or a search domain: never blocked by FQDN rules (governed at L3)"
	case policy.ReasonLookupsEnf:
		by := "the node setting --lookups=Enforce"
		if p := o.Policy.String(); p != "" {
			by = p + " (lookups: Enforce)"
		}
		return fmt.Sprintf("egress is restricted, lookups are enforced by %s and no Allow FQDN rule matches the name", by)
	case policy.ReasonNoFQDNRule:
		return "no FQDN rule decided the name and lookups are observed: the lookup is allowed (connections are still governed at L3)"
	case policy.ReasonInvalidName:
		return "not a valid DNS name"
	}
	return o.Reason
}

// summary is a one-line account of an outcome.
func summary(dir string, o policy.Outcome) string {
	if o.Reason == policy.ReasonRule {
		return fmt.Sprintf("rule %s (%s) of %s, %s tier", o.Rule, actionName(o), o.Policy, o.Tier)
	}
	return o.Reason + ": " + describe(dir, o)
}

func printLookup(w io.Writer, m *model, d policy.LookupDecision) {
	fmt.Fprintf(w, "Verdict:     %s\n", d.Verdict)
	fmt.Fprintf(w, "Lookup:      %s by %s\n", d.Name, d.Workload)
	fmt.Fprintf(w, "\nFQDN rules of the egress policies of %s: %s\n", d.Workload, d.Verdict)
	printOutcome(w, "  ", "egress", d.Outcome)
	if d.Audit != nil {
		fmt.Fprintf(w, "  audit:     would %s: %s\n", d.Audit.Verdict, summary("egress", *d.Audit))
	}
	if d.Verdict == policy.Allow {
		for i, r := range m.engine.FQDNRules(d.Workload, d.Name) {
			label := "  sets:      "
			if i > 0 {
				label = "             "
			}
			fmt.Fprintf(w, "%s%s (the answer's addresses are allowed by this rule)\n", label, r)
		}
	}
}

// actionName is the action of the deciding rule as its policy writes it: a
// ClusterNetworkPolicy's Allow is its Accept.
func actionName(o policy.Outcome) string {
	if o.Policy.Kind == policy.KindClusterNetworkPolicy && o.Action == policy.ActionAllow {
		return "Accept"
	}
	return string(o.Action)
}
