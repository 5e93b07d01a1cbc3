package dnsproxy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/tunnel"
	"github.com/egressd/egressd/policy"
)

// TunnelDetector is DNS tunnel detection as the resolver uses it: the method
// set of *tunnel.Detector (tests put a fake in its place). Keys are
// tunnelKey's. Calls are made on the query path.
type TunnelDetector interface {
	// Check scores a lookup before it is forwarded; Blocked in the verdict
	// refuses it (its pair is, or now becomes, quarantined).
	Check(key, qname string, qtype uint16) tunnel.Verdict
	// Blocked reports whether lookups of qname are refused (the fast path).
	Blocked(key, qname string) (bool, string)
	// Observe records an answered lookup (answerSize: the reply's bytes).
	Observe(key, qname string, qtype uint16, rcode, answerSize int) tunnel.Verdict
	// Pair names the registered domain of qname and the pair's score.
	Pair(key, qname string) (domain string, score float64)
}

var _ TunnelDetector = (*tunnel.Detector)(nil)

// tunnelKey is the detector's key of a lookup: the workload
// ("namespace/name"), or "client:<address>" for a client that is no known
// workload (no "/", so never taken for a workload).
func tunnelKey(workload string, client netip.Addr) string {
	if workload == "" {
		return "client:" + client.String()
	}
	return workload
}

// tunnelEvent adds a verdict's registered domain, score and features to the
// event of a lookup.
func tunnelEvent(ev event.Event, v tunnel.Verdict) event.Event {
	ev.Domain, ev.Score, ev.Features = v.Domain, v.Score, v.Features
	return ev
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
	key := tunnelKey(name, req.client)
	// One call: the quarantine, and the pre-forward score (Block refuses the
	// crossing query; Alert reports it before it is forwarded). Without the
	// pre-forward check a tunnel would only be quarantined after an answered
	// lookup crossed the threshold, and queries a client sent concurrently
	// would still go out.
	v := t.Check(key, q.Name, q.Qtype)
	if v.Suspected {
		response := "FORWARDED"
		if v.Blocked {
			response = "REFUSED"
		}
		srv.deps.Events.Emit(ctx, tunnelEvent(srv.event(req, wl, event.TunnelSuspected, policy.Outcome{Reason: v.Reason()}, response), v))
	}
	if !v.Blocked {
		return nil
	}
	srv.st.blocked.Add(1)
	m := srv.rcode(req, dns.RcodeRefused)
	srv.addEDE(req, m, dns.ExtendedErrorCodeProhibited, "egressd: DNS tunnel suspected, "+v.Domain+" quarantined")
	ev := srv.event(req, wl, event.TunnelBlocked, policy.Outcome{Reason: "tunnel-quarantine"}, "REFUSED")
	ev.Domain, ev.Score = t.Pair(key, q.Name)
	srv.deps.Events.Emit(ctx, ev)
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
	v := t.Observe(tunnelKey(name, req.client), q.Name, q.Qtype, reply.Rcode, size)
	if !v.Suspected {
		return
	}
	srv.deps.Events.Emit(ctx, tunnelEvent(srv.event(req, wl, event.TunnelSuspected, policy.Outcome{Reason: v.Reason()}, dns.RcodeToString[reply.Rcode]), v))
}
