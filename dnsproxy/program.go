package dnsproxy

import (
	"context"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// answerAddr is one A/AAAA of an answer with its TTL.
type answerAddr struct {
	ip  netip.Addr
	ttl uint32
}

// answerAddrs returns every A and AAAA of the answer section: the records of
// the whole CNAME chain (the upstream sends the chain and the addresses of its
// last name in one answer; scrubAnswer removed addresses of other names).
func answerAddrs(m *dns.Msg) []answerAddr {
	var out []answerAddr
	for _, rr := range m.Answer {
		if ip, ok := chain.Addr(rr); ok {
			out = append(out, answerAddr{ip, rr.Header().Ttl})
		}
	}
	return out
}

// scrubAnswer removes from the answer section of an upstream answer the
// addresses (A, AAAA) whose owner is not on the alias chain of the question
// (chain.Of): the question's name, the targets of the CNAMEs owned by chain
// names and the names DNAMEs substitute, in any order. Such records (from a misbehaving or forged upstream) would
// otherwise be written to the kernel sets as addresses of the name the
// workload was allowed to resolve. Other records are kept. It returns the
// number of records removed.
func scrubAnswer(m *dns.Msg) int {
	if len(m.Question) != 1 || len(m.Answer) == 0 {
		return 0
	}
	c := chain.Of(m)
	kept := m.Answer[:0]
	removed := 0
	for _, rr := range m.Answer {
		if t := rr.Header().Rrtype; (t == dns.TypeA || t == dns.TypeAAAA) && !c.Owns(rr.Header().Name) {
			removed++
			continue
		}
		kept = append(kept, rr)
	}
	clear(m.Answer[len(kept):])
	m.Answer = kept
	return removed
}

// setTimeout is the timeout written for an address with the given TTL:
// max(TTL, MinSetTTL) + SetGrace, at least one second (zero means "no
// timeout" to the kernel).
func (s *settings) setTimeout(ttl uint32) uint32 {
	return max(max(ttl, s.minSetTTL)+s.grace, 1)
}

// program writes the answer's addresses as (workload IP, answer IP) pairs into
// the sets of rules, in one transaction, and clamps the TTLs of the reply so
// that no record outlives the entries written. The addresses are admitted by
// the bounds first (admitAnswer: refused ones leave the reply), tracked with
// the answer's alias chain links, and recorded in the reference model
// (trackAnswer).
func (srv *Server) program(ctx context.Context, req *request, w *policy.Workload, rules []policy.RuleRef, reply *dns.Msg, links []string) error {
	addrs := answerAddrs(reply)
	if len(addrs) == 0 || len(rules) == 0 || srv.deps.Sets == nil || len(reply.Question) != 1 {
		return nil
	}
	var srcs [2][]netip.Addr // by family: [0] IPv4, [1] IPv6
	for _, ip := range w.IPs {
		ip = ip.Unmap()
		if ip.Is4() {
			srcs[0] = append(srcs[0], ip)
		} else {
			srcs[1] = append(srcs[1], ip)
		}
	}
	// The bounds (limits.go): refused addresses leave the reply.
	addrs, grant, err := srv.admitAnswer(ctx, req, w, rules, srcs, reply.Question[0].Name, links, addrs, reply)
	if err != nil {
		return err
	}
	var elems [2][]ipset.Element
	minTTL := ^uint32(0)
	for _, a := range addrs {
		minTTL = min(minTTL, a.ttl)
		fi := 0
		if !a.ip.Is4() {
			fi = 1
		}
		timeout := time.Duration(srv.s.setTimeout(a.ttl)) * time.Second
		for _, src := range srcs[fi] {
			elems[fi] = append(elems[fi], ipset.Pair(src, a.ip, timeout))
		}
	}
	// No record of the reply (CNAMEs included) may outlive the shortest-lived
	// address: a client must come back to us before any entry expires.
	for _, rr := range reply.Answer {
		h := rr.Header()
		h.Ttl = min(h.Ttl, minTTL)
	}
	ops := make([]ipset.Op, 0, 2*len(rules))
	n := 0
	for _, r := range rules {
		for fi, fam := range [2]ipset.Family{ipset.IPv4, ipset.IPv6} {
			if len(elems[fi]) == 0 {
				continue
			}
			ops = append(ops, ipset.Op{Kind: ipset.OpAdd, Set: srv.deps.SetNamer(r, fam), Elements: elems[fi]})
			n += len(elems[fi])
		}
	}
	if len(ops) == 0 {
		srv.track.undo(grant) // nothing of the workload's families to write
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, srv.s.SetWriteTimeout)
	defer cancel()
	start := time.Now()
	err = srv.deps.Sets.Apply(ctx, ops...)
	if srv.deps.Observer.SetWrite != nil {
		srv.deps.Observer.SetWrite(n, time.Since(start), err)
	}
	srv.st.setWrites.Add(1)
	if err != nil {
		srv.st.setFailures.Add(1)
		srv.track.undo(grant)
		return err
	}
	srv.st.setElements.Add(uint64(n))
	srv.trackAnswer(w.Key(), reply.Question[0].Name, addrs) // tracker.go
	return nil
}
