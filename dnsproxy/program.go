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

// sources are a workload's IPs by family: [0] IPv4, [1] IPv6 (unmapped).
type sources [2][]netip.Addr

// sourcesOf returns the IPs of w by family.
func sourcesOf(w *policy.Workload) sources {
	var srcs sources
	for _, ip := range w.IPs {
		ip = ip.Unmap()
		srcs[family(ip)] = append(srcs[family(ip)], ip)
	}
	return srcs
}

// family is the index of ip's family in sources: 0 IPv4, 1 IPv6.
func family(ip netip.Addr) int {
	if ip.Is4() {
		return 0
	}
	return 1
}

// setFamilies are the set families by index of sources.
var setFamilies = [2]ipset.Family{ipset.IPv4, ipset.IPv6}

// setOps turns (rules, sources, addresses) into set operations: for every
// rule and family, one add of the (source, address) pairs of that family
// into the rule's set, each with the timeout of its address. It is the single
// place where an answer becomes kernel set elements: the slow path
// (program), the fast path (fastProgram) and Restore all write through it.
// n is the number of elements.
func (srv *Server) setOps(rules []policy.RuleRef, srcs sources, addrs []answerAddr, timeout func(answerAddr) time.Duration) (ops []ipset.Op, n int) {
	var elems [2][]ipset.Element
	for _, a := range addrs {
		fi := family(a.ip)
		for _, src := range srcs[fi] {
			elems[fi] = append(elems[fi], ipset.Pair(src, a.ip, timeout(a)))
		}
	}
	for _, r := range rules {
		for fi, fam := range setFamilies {
			if len(elems[fi]) == 0 {
				continue
			}
			ops = append(ops, ipset.Op{Kind: ipset.OpAdd, Set: srv.deps.SetNamer(r, fam), Elements: elems[fi]})
			n += len(elems[fi])
		}
	}
	return ops, n
}

// answerTimeout is the timeout of the set entries of an answer's address:
// setTimeout of its TTL.
func (s *settings) answerTimeout(a answerAddr) time.Duration {
	return time.Duration(s.setTimeout(a.ttl)) * time.Second
}

// writeAnswer writes the admitted addresses of an answer for workload w into
// the sets of rules, in one Apply bounded by SetWriteTimeout, and records
// them in the reference model (trackAnswer). Nothing to write for the
// workload's families, or a failed write, gives the tracker's grant back.
// wrote reports whether a write happened and succeeded; a successful one is
// counted (a failed one is left to the caller to count).
func (srv *Server) writeAnswer(ctx context.Context, w *policy.Workload, rules []policy.RuleRef, srcs sources, qname string, addrs []answerAddr, g *grant) (wrote bool, err error) {
	ops, n := srv.setOps(rules, srcs, addrs, srv.s.answerTimeout)
	if len(ops) == 0 {
		srv.track.undo(g) // nothing of the workload's families to write
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, srv.s.SetWriteTimeout)
	defer cancel()
	start := time.Now()
	err = srv.deps.Sets.Apply(ctx, ops...)
	if srv.deps.Observer.SetWrite != nil {
		srv.deps.Observer.SetWrite(n, time.Since(start), err)
	}
	if err != nil {
		srv.track.undo(g)
		return false, err
	}
	srv.st.setWrites.Add(1)
	srv.st.setElements.Add(uint64(n))
	srv.trackAnswer(w.Key(), qname, addrs) // tracker.go
	return true, nil
}

// program writes the answer's addresses as (workload IP, answer IP) pairs into
// the sets of the lookup's rules, in one transaction, and clamps the TTLs of
// the reply so that no record outlives the entries written. The addresses are
// admitted by the bounds first (admitAnswer: refused ones leave the reply),
// tracked with the answer's alias chain links, and recorded in the reference
// model (writeAnswer).
func (srv *Server) program(ctx context.Context, req *request, lk *lookup, reply *dns.Msg) error {
	addrs := answerAddrs(reply)
	if len(addrs) == 0 || len(lk.rules) == 0 || srv.deps.Sets == nil || len(reply.Question) != 1 {
		return nil
	}
	srcs := sourcesOf(lk.wl)
	// The bounds (limits.go): refused addresses leave the reply.
	addrs, grant, err := srv.admitAnswer(ctx, req, lk.wl, lk.rules, srcs, lk.name, lk.links, addrs, reply)
	if err != nil {
		return err
	}
	// No record of the reply (CNAMEs included) may outlive the shortest-lived
	// address: a client must come back to us before any entry expires.
	minTTL := ^uint32(0)
	for _, a := range addrs {
		minTTL = min(minTTL, a.ttl)
	}
	for _, rr := range reply.Answer {
		h := rr.Header()
		h.Ttl = min(h.Ttl, minTTL)
	}
	if _, err := srv.writeAnswer(ctx, lk.wl, lk.rules, srcs, lk.name, addrs, grant); err != nil {
		srv.st.setWrites.Add(1)
		srv.st.setFailures.Add(1)
		return err
	}
	return nil
}
