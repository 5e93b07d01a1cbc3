package dnsproxy

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"

	"github.com/egressd/egressd/policy"
)

// Bounds on what one answer, one (workload, name) and one workload may put
// into the kernel sets (Config.MaxIPsPerAnswer, MaxIPsPerName,
// MaxElementsPerWorkload). A name whose answers carry thousands of addresses
// would otherwise grow the sets, the tracker, the reference model and the
// checkpoint without bound.
//
// At a bound the choice is refusal, not eviction: addresses already written
// stay until their own timeout (a client that was handed an address can use
// it for its TTL, as promised), new ones are not written, and every record
// not written is removed from the reply, so a reply never carries an address
// that is not in the sets. An answer left without any address is answered
// SERVFAIL with an Extended DNS Error naming the bound (the client retries;
// nothing is cached as negative). Each refusal is counted (Stats) and
// reported as a dns.answer.capped event (the bound in Reason, the number of
// addresses in the attribute egressd.dropped).

// AttrDropped is the dns.answer.capped attribute counting the addresses dropped.
const AttrDropped = "egressd.dropped"

// Reasons of dns.answer.capped events: the bound that dropped the addresses.
const (
	ReasonMaxIPsPerAnswer        = "max-ips-per-answer"
	ReasonMaxIPsPerName          = "max-ips-per-name"
	ReasonMaxElementsPerWorkload = "max-elements-per-workload"
)

// errAddrLimit: every address of an answer was refused by a bound.
type errAddrLimit struct{ reason string }

func (e errAddrLimit) Error() string { return "egressd: address limit reached (" + e.reason + ")" }

// programFailureText is the EDE text of a reply whose addresses could not be
// programmed.
func programFailureText(err error) string {
	var lim errAddrLimit
	if errors.As(err, &lim) {
		return lim.Error()
	}
	return "egressd: firewall set write failed"
}

// capAnswer removes from an upstream answer the A and AAAA records beyond the
// first MaxIPsPerAnswer (before it is cached), counts them and reports them
// for the client that asked. It returns the number removed.
func (srv *Server) capAnswer(ctx context.Context, req *request, m *dns.Msg) int {
	max := srv.s.MaxIPsPerAnswer
	if max <= 0 || len(m.Answer) <= max {
		return 0
	}
	n := 0
	dropped := 0
	kept := m.Answer[:0]
	for _, rr := range m.Answer {
		if t := rr.Header().Rrtype; t == dns.TypeA || t == dns.TypeAAAA {
			if n++; n > max {
				dropped++
				continue
			}
		}
		kept = append(kept, rr)
	}
	clear(m.Answer[len(kept):])
	m.Answer = kept
	if dropped == 0 {
		return 0
	}
	srv.st.overAnswer.Add(uint64(dropped))
	if req != nil {
		var wl *policy.Workload
		if eng := srv.deps.Engine; eng != nil {
			if key, ok := eng.Store().WorkloadByIP(req.client); ok {
				if w, ok := eng.Store().Workload(key); ok {
					wl = &w
				}
			}
		}
		srv.reportCapped(ctx, req, wl, ReasonMaxIPsPerAnswer, dropped, "NOERROR")
	}
	return dropped
}

// reportCapped reports a dns.answer.capped event.
func (srv *Server) reportCapped(ctx context.Context, req *request, wl *policy.Workload, reason string, dropped int, response string) {
	ev := srv.event(req, wl, event.AnswerCapped, policy.Outcome{Reason: reason}, response)
	ev.Attrs = map[string]string{AttrDropped: strconv.Itoa(dropped)}
	srv.deps.Events.Emit(ctx, ev)
}

// admitAnswer reserves in the tracker the addresses of a reply about to be
// written for workload w (answered through the alias chain links) (srcs: its IPs by family, rules: the rules whose
// sets receive them) and removes from the reply the address records refused
// by MaxIPsPerName or MaxElementsPerWorkload. It returns the admitted
// addresses and the grant to undo when the write fails; an errAddrLimit when
// the answer had addresses and none was admitted. req may be nil (the fast
// path: it only proceeds when everything is admitted).
func (srv *Server) admitAnswer(ctx context.Context, req *request, w *policy.Workload, rules []policy.RuleRef, srcs [2][]netip.Addr, qname string, links []string, addrs []answerAddr, reply *dns.Msg) ([]answerAddr, *grant, error) {
	now := srv.now()
	ips := make([]netip.Addr, len(addrs))
	exp := make([]time.Time, len(addrs))
	elems := make([]int, len(addrs))
	for i, a := range addrs {
		ips[i] = a.ip
		exp[i] = now.Add(time.Duration(srv.s.setTimeout(a.ttl)) * time.Second)
		fi := 0
		if !a.ip.Is4() {
			fi = 1
		}
		elems[i] = len(rules) * len(srcs[fi])
	}
	g := srv.track.admit(w.Key(), qname, links, ips, exp, elems, now)
	if g.refused() == 0 {
		return addrs, g, nil
	}
	srv.st.overName.Add(uint64(g.overName))
	srv.st.overWorkload.Add(uint64(g.overWorkload))
	refused := map[netip.Addr]bool{}
	kept := addrs[:0:0]
	for i, a := range addrs {
		if g.ok[i] {
			kept = append(kept, a)
		} else {
			refused[a.ip] = true
		}
	}
	if reply != nil {
		out := reply.Answer[:0]
		for _, rr := range reply.Answer {
			if ip, ok := chain.Addr(rr); ok && refused[ip] {
				continue
			}
			out = append(out, rr)
		}
		clear(reply.Answer[len(out):])
		reply.Answer = out
	}
	reason := ReasonMaxIPsPerName
	if g.overWorkload > g.overName {
		reason = ReasonMaxElementsPerWorkload
	}
	var err error
	response := "NOERROR"
	if len(kept) == 0 {
		err, response = errAddrLimit{reason}, "SERVFAIL"
	}
	if req != nil {
		srv.reportCapped(ctx, req, w, reason, g.refused(), response)
	}
	return kept, g, err
}
