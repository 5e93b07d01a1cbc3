// Package l7 is egressd's HTTP/TLS egress proxy. It closes the shared-IP hole
// of IP-based FQDN enforcement: where many names share an address (CDNs,
// cloud front doors), allowing one name opens them all at L3; the proxy checks
// the name the workload actually asks for (HTTP Host, CONNECT authority, TLS
// SNI) against the same policy.
//
// Two front ends share one Checker:
//   - Explicit (NewExplicit): an HTTP proxy (github.com/elazarl/goproxy) with
//     CONNECT, for clients configured with a proxy (curl --proxy, HTTPS_PROXY);
//   - Transparent (NewTransparent): connections redirected by nftables (see
//     egress.ApplyRedirect); TLS is not terminated, the SNI is read from the
//     ClientHello and the bytes are spliced to the original destination.
//
// See docs/l7.md for the precise decision and the configuration.
package l7

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/domain"
)

// Reasons of a denial (Verdict.Reason, the event's reason).
const (
	ReasonNameDenied    = "name-denied"           // DecideLookup blocks the name
	ReasonChainDenied   = "chain-denied"          // a CNAME/DNAME of the name's resolution is denied (DecideChain)
	ReasonConnDenied    = "connection-denied"     // Decide blocks (workload → address, port)
	ReasonOtherName     = "address-of-other-name" // the address is allowed only for another name
	ReasonAddrMismatch  = "address-mismatch"      // original destination is not an address of the name
	ReasonResolveFailed = "resolve-failed"        // the name did not resolve
	ReasonNoSNI         = "no-sni"                // TLS without server_name
	ReasonECH           = "ech"                   // encrypted ClientHello: the real name is hidden
	ReasonBadHello      = "bad-client-hello"      // not a TLS ClientHello, malformed or too large
	ReasonHelloTimeout  = "client-hello-timeout"  // the ClientHello did not arrive in time
	ReasonNoHost        = "no-host"               // HTTP request without a host
	ReasonHostMismatch  = "host-mismatch"         // Host header differs from the request target
	ReasonIPLiteral     = "address-literal"       // a bare address where a name is needed
	ReasonBadRequest    = "bad-request"           // unparsable HTTP request
	ReasonDoH           = "dns-over-https"        // a known public DoH resolver (DNS side doors)
)

// Resolver returns the addresses of host. The agent resolves through the node
// resolver, so the proxy sees the same (cached) answers as the workload.
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

// Resolution is what a ChainResolver found for a name: its addresses and the
// links of the alias chains (CNAME targets, DNAME owners and targets,
// substituted names; see dnsproxy/chain) its answers went through.
type Resolution struct {
	Addrs []netip.Addr
	Chain []string
}

// ChainResolver resolves host and reports the alias chain of the answers
// (DNSResolver queries a DNS server for A and AAAA).
type ChainResolver func(ctx context.Context, host string) (Resolution, error)

// Checker decides requests of workloads. Its fields are read-only after first use.
type Checker struct {
	Engine *policy.Engine
	// ResolveChain resolves names with their alias chains, which are decided
	// like the resolver decides them (Engine.DecideChain); the agent uses
	// DNSResolver on the node resolver. When nil, Resolve is used and no
	// chain is known.
	ResolveChain ChainResolver
	// Resolve resolves names without their chains (tests); nil uses
	// net.DefaultResolver.
	Resolve Resolver
	// BlockDoH, when set, reports whether a workload (zero key: not a known
	// workload) must not reach the host name of a known DoH resolver at dst
	// (invalid in explicit mode): the DNS side doors by name (docs/egressd.md
	// "DNS side doors"). Such requests are denied with ReasonDoH.
	BlockDoH func(w policy.WorkloadKey, name string, dst netip.Addr) bool
}

// Request is what the proxy is asked to reach.
type Request struct {
	Client netip.Addr // source address of the workload
	Host   string     // name (or address literal) asked for
	Port   int
	// Dst is the original destination (transparent mode); invalid in
	// explicit mode, where the proxy picks among the name's addresses.
	Dst netip.Addr
}

// Verdict is the decision on a request.
type Verdict struct {
	Allowed  bool
	Workload policy.WorkloadKey // zero when the client is not a workload
	Name     string             // normalized name ("" for an address literal)
	// Addrs are the destinations the proxy may connect to, in order.
	Addrs []netip.Addr
	// Why a request was denied, and by which policy/rule/tier.
	Reason string
	Policy string
	Rule   string
	Tier   string
	// CNAME is the alias chain link whose Deny rule decided (reason
	// chain-denied, or an Audit verdict of the chain); empty otherwise.
	CNAME string
	// Audit is set on an allowed request that Audit-mode policies would have
	// denied: their reason, policy, rule and tier (reported as
	// http.egress.audit; the request proceeds).
	Audit *Verdict
}

// Describe is the one-line reason given to clients: "<reason> by <policy>".
func (v Verdict) Describe() string {
	if v.Policy == "" {
		return v.Reason
	}
	s := v.Reason + " by " + v.Policy
	if v.Rule != "" {
		s += " rule " + v.Rule
	}
	if v.CNAME != "" {
		s += " via " + v.CNAME
	}
	return s
}

func (c *Checker) resolve(ctx context.Context, host string) (Resolution, error) {
	if c.ResolveChain != nil {
		return c.ResolveChain(ctx, host)
	}
	var addrs []netip.Addr
	var err error
	if c.Resolve != nil {
		addrs, err = c.Resolve(ctx, host)
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	return Resolution{Addrs: addrs}, err
}

func fromOutcome(v *Verdict, o policy.Outcome, reason string) {
	v.Reason, v.Policy, v.Rule, v.Tier = reason, o.Policy.String(), o.Rule, string(o.Tier)
}

// recordLifetime is how long the proxy's own lookups stay in the policy model
// (its resolver gives no TTLs); the resolver's sweep then drops them.
const recordLifetime = 5 * time.Minute

// Check decides a request (DESIGN §1, docs/l7.md "Decision"):
//
//  1. the name must be allowed: Engine.DecideLookup(workload, name);
//  2. the proxy resolves the name itself (ResolveChain) and decides every
//     link of the answers' alias chains (Engine.DecideChain, as the node
//     resolver does: a CNAME or DNAME into a name a Deny rule matches denies
//     the request, reason chain-denied); then it records the answers for the
//     workload (Store.RecordLookupUntil, for recordLifetime), as the node
//     resolver would; in transparent mode the original destination must be
//     one of them;
//  3. every candidate address (the original destination, or the answers) is
//     checked with Engine.DecideFor(workload address → address, port, TCP;
//     name): the connection is decided as if the workload had resolved only
//     this name to the address, so an address allowed for api.good.com does
//     not open evil.shared-cdn.com, and two names allowed by different rules
//     on one address are each allowed by their own rule.
//
// An address literal as the host skips 1 and 2 and passes 3 only when the
// address is allowed without FQDN rules. Audit-mode policies that would deny
// an allowed request are reported in Verdict.Audit.
func (c *Checker) Check(ctx context.Context, r Request) Verdict {
	e := c.Engine
	w, known := e.Store().WorkloadByIP(r.Client)
	v := Verdict{Workload: w}
	host := strings.TrimSuffix(strings.TrimSpace(r.Host), ".")
	if host == "" {
		v.Reason = ReasonNoHost
		return v
	}
	var cands []netip.Addr
	var audit *Verdict
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		ip = ip.Unmap()
		if r.Dst.IsValid() && ip != r.Dst.Unmap() {
			v.Reason = ReasonAddrMismatch
			return v
		}
		cands = []netip.Addr{ip}
	} else {
		name, err := domain.NormalizeName(host)
		if err != nil {
			v.Reason = policy.ReasonInvalidName
			return v
		}
		v.Name = name
		if c.BlockDoH != nil && c.BlockDoH(w, name, r.Dst.Unmap()) {
			v.Reason = ReasonDoH
			return v
		}
		var ld policy.LookupDecision
		if known {
			ld = e.DecideLookup(w, name)
			if ld.Blocked() {
				fromOutcome(&v, ld.Outcome, ReasonNameDenied)
				return v
			}
			if ld.Audit != nil && ld.Audit.Verdict == policy.Deny {
				audit = &Verdict{Workload: w, Name: name}
				fromOutcome(audit, *ld.Audit, ReasonNameDenied)
			}
		}
		res, err := c.resolve(ctx, name)
		addrs := res.Addrs
		if err != nil || len(addrs) == 0 {
			v.Reason = ReasonResolveFailed
			return v
		}
		if known && len(res.Chain) > 0 {
			cd := e.DecideChain(ld, res.Chain)
			if cd.Blocked() {
				fromOutcome(&v, cd.Outcome, ReasonChainDenied)
				v.CNAME = cd.Via
				return v
			}
			if cd.AuditVia != "" {
				audit = &Verdict{Workload: w, Name: name, CNAME: cd.AuditVia}
				fromOutcome(audit, *cd.Audit, ReasonChainDenied)
			}
		}
		for i := range addrs {
			addrs[i] = addrs[i].Unmap()
		}
		if known {
			// Expires like a resolver record, so that the sweep bounds it.
			e.Store().RecordLookupUntil(w, name, time.Now().Add(recordLifetime), addrs...)
		}
		cands = addrs
		if r.Dst.IsValid() {
			if !slices.Contains(addrs, r.Dst.Unmap()) {
				v.Reason = ReasonAddrMismatch
				return v
			}
			cands = []netip.Addr{r.Dst.Unmap()}
		}
	}
	var first, firstAudit *Verdict
	auditAllows := false
	for _, ip := range cands {
		conn := policy.Connection{Src: r.Client, Dst: ip, Port: int32(r.Port), Protocol: policy.ProtocolTCP}
		d := e.DecideFor(conn, v.Name)
		if d.Verdict == policy.Deny {
			if first == nil {
				first = &Verdict{}
				// Why: denied whatever the names, or allowed only because the
				// workload resolved another name to the address.
				if all := e.Decide(conn); all.Verdict == policy.Deny {
					fromOutcome(first, all.Deciding().Outcome, ReasonConnDenied)
				} else {
					fromOutcome(first, d.Deciding().Outcome, ReasonOtherName)
				}
			}
			continue
		}
		v.Addrs = append(v.Addrs, ip)
		o := wouldDeny(d)
		if o == nil {
			auditAllows = true
			continue
		}
		if firstAudit == nil {
			firstAudit = &Verdict{Workload: w, Name: v.Name}
			reason := ReasonConnDenied
			if all := e.Decide(conn); wouldDeny(all) == nil && all.Verdict == policy.Allow {
				reason = ReasonOtherName
			}
			fromOutcome(firstAudit, *o, reason)
		}
	}
	if len(v.Addrs) > 0 {
		v.Allowed = true
		switch {
		case audit != nil:
			v.Audit = audit
		case !auditAllows:
			// every address the proxy may use would be denied
			v.Audit = firstAudit
		}
		if v.Audit != nil && v.Name == "" && v.Audit.Reason == ReasonOtherName {
			v.Audit.Reason = ReasonIPLiteral
		}
		return v
	}
	v.Reason, v.Policy, v.Rule, v.Tier = first.Reason, first.Policy, first.Rule, first.Tier
	if v.Name == "" && v.Reason == ReasonOtherName {
		v.Reason = ReasonIPLiteral
	}
	return v
}

// wouldDeny returns the outcome of Audit-mode policies when they would deny
// an allowed decision (egress first), else nil.
func wouldDeny(d policy.Decision) *policy.Outcome {
	for _, dd := range []policy.DirectionDecision{d.Egress, d.Ingress} {
		if dd.Audit != nil && dd.Audit.Verdict == policy.Deny {
			return dd.Audit
		}
	}
	return nil
}

// errDenied is returned by dial paths that refused a request.
var errDenied = errors.New("l7: denied by policy")
