package dnsproxy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/tunnel"
	"github.com/egressd/egressd/policy"
)

// Tunnel-detection event names (docs/design.md §4, §6).
const (
	EventTunnelSuspected = "dns.tunnel.suspected"
	EventTunnelBlocked   = "dns.tunnel.blocked"
)

// TunnelDetector is the resolver's view of DNS tunnel detection (the agent
// adapts dnsproxy/tunnel to it). Calls are made on the query path and must be
// cheap; implementations are safe for concurrent use.
type TunnelDetector interface {
	// Blocked reports whether the workload's lookups of qname are refused
	// (its registered domain is quarantined), with the Extended DNS Error text.
	Blocked(workload string, client netip.Addr, qname string) (bool, string)
	// Observe records an answered lookup: query name and type, response code
	// and size of the reply in bytes.
	Observe(ctx context.Context, workload string, client netip.Addr, qname string, qtype uint16, rcode, answerSize int) TunnelVerdict
}

// TunnelVerdict is the outcome of one observed lookup.
type TunnelVerdict struct {
	// Suspected: report a dns.tunnel.suspected event.
	Suspected bool
	// Domain is the registered domain; Score the pair's score; Reason the
	// comma-separated reasons; Features the feature values (set when Suspected).
	Domain   string
	Score    float64
	Reason   string
	Features map[string]float64
}

// TunnelActions returns a per-workload action for tunnel.Config.ActionFor:
// the one the policies' spec.tunnelDetection set for the workload
// ("namespace/name"; policy.Engine.TunnelDetection, cached per store
// generation, no allocation), or false when none does (the node default
// applies). Keys without a "/" (clients that are not workloads) take the
// default. A nil engine returns nil.
func TunnelActions(eng *policy.Engine) func(workload string) (tunnel.Action, bool) {
	if eng == nil {
		return nil
	}
	return func(workload string) (tunnel.Action, bool) {
		ns, name, ok := strings.Cut(workload, "/")
		if !ok {
			return tunnel.Off, false
		}
		ts, ok := eng.TunnelDetection(policy.WorkloadKey{Namespace: ns, Name: name})
		if !ok {
			return tunnel.Off, false
		}
		switch ts.Action {
		case policy.TunnelDetectionOff:
			return tunnel.Off, true
		case policy.TunnelDetectionAlert:
			return tunnel.Alert, true
		case policy.TunnelDetectionBlock:
			return tunnel.Block, true
		}
		return tunnel.Off, false
	}
}

// TunnelChecker is implemented by TunnelDetectors that score a lookup before
// it is forwarded (tunnel.Detector.Check): blocked is true when the lookup
// must be refused because it would take its pair over the threshold under
// Block; the verdict is reported as dns.tunnel.suspected when Suspected.
// A lookup of a pair already quarantined is blocked too (Suspected false), so
// the slow path calls Check instead of Blocked. Without it, a tunnel is only
// quarantined after an answered lookup crossed the threshold, and queries a
// client sent concurrently still go out.
//
// Check returns the verdict and whether the lookup is refused; a Suspected
// verdict is reported as dns.tunnel.suspected either way.
type TunnelChecker interface {
	Check(ctx context.Context, workload string, client netip.Addr, qname string, qtype uint16) (v TunnelVerdict, blocked bool)
}

// TunnelPairInfo is implemented by TunnelDetectors that can name the
// registered domain of a quarantined lookup and the pair's score, for the
// dns.tunnel.blocked event (docs/design.md §4: tunnel events carry domain and
// score). Called only when a lookup is refused.
type TunnelPairInfo interface {
	PairInfo(workload string, client netip.Addr, qname string) (domain string, score float64)
}

// TunnelReporter is implemented by Reporters that take tunnel events
// (dns.tunnel.suspected, dns.tunnel.blocked: Event.Event says which). A
// Reporter without it does not receive them.
type TunnelReporter interface {
	TunnelEvent(ctx context.Context, ev Event)
}

// tunnelRefused answers a lookup of a quarantined (workload, domain) pair:
// REFUSED with an Extended DNS Error "Prohibited" (RFC 8914 code 18), and a
// dns.tunnel.blocked event. It returns nil when the lookup may proceed.
func (srv *Server) tunnelRefused(ctx context.Context, req *request, wl *policy.Workload) *dns.Msg {
	t := srv.deps.Tunnel
	if t == nil {
		return nil
	}
	name := ""
	if wl != nil {
		name = wl.Key().String()
	}
	q := req.q.Question[0]
	var blocked bool
	var text string
	if c, ok := t.(TunnelChecker); ok {
		// One call: the quarantine, and the pre-forward score (Block refuses
		// the crossing query; Alert reports it before it is forwarded).
		var v TunnelVerdict
		v, blocked = c.Check(ctx, name, req.client, q.Name, q.Qtype)
		if r, ok := srv.deps.Reporter.(TunnelReporter); ok && v.Suspected {
			response := "FORWARDED"
			if blocked {
				response = "REFUSED"
			}
			ev := srv.event(req, wl, EventTunnelSuspected, policy.Outcome{Reason: v.Reason}, response)
			ev.Domain, ev.Score, ev.Features = v.Domain, v.Score, v.Features
			r.TunnelEvent(ctx, ev)
		}
		if !blocked {
			return nil
		}
		text = "egressd: DNS tunnel suspected, " + v.Domain + " quarantined"
	} else if blocked, text = t.Blocked(name, req.client, q.Name); !blocked {
		return nil
	}
	srv.st.blocked.Add(1)
	m := srv.rcode(req, dns.RcodeRefused)
	srv.addEDE(req, m, dns.ExtendedErrorCodeProhibited, text)
	if r, ok := srv.deps.Reporter.(TunnelReporter); ok {
		ev := srv.event(req, wl, EventTunnelBlocked, policy.Outcome{Reason: "tunnel-quarantine"}, "REFUSED")
		if pi, ok := t.(TunnelPairInfo); ok {
			ev.Domain, ev.Score = pi.PairInfo(name, req.client, q.Name)
		}
		r.TunnelEvent(ctx, ev)
	}
	return m
}

const dnsHeaderLen = 12

// tunnelObserve feeds an answered lookup to the detector and reports a
// dns.tunnel.suspected event when the detector says so.
func (srv *Server) tunnelObserve(ctx context.Context, req *request, wl *policy.Workload, reply *dns.Msg) {
	t := srv.deps.Tunnel
	if t == nil || reply == nil {
		return
	}
	name := ""
	if wl != nil {
		name = wl.Key().String()
	}
	q := req.q.Question[0]
	// The answer's size: the reply without its header and question.
	size := max(reply.Len()-dnsHeaderLen-len(q.Name)-5, 0)
	v := t.Observe(ctx, name, req.client, q.Name, q.Qtype, reply.Rcode, size)
	if !v.Suspected {
		return
	}
	if r, ok := srv.deps.Reporter.(TunnelReporter); ok {
		ev := srv.event(req, wl, EventTunnelSuspected, policy.Outcome{Reason: v.Reason}, dns.RcodeToString[reply.Rcode])
		ev.Domain, ev.Score, ev.Features = v.Domain, v.Score, v.Features
		r.TunnelEvent(ctx, ev)
	}
}
