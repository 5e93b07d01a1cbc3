package dnsproxy

import (
	"context"

	"github.com/miekg/dns"
)

// resolve answers from the cache or the upstreams. Identical queries in flight
// share one upstream exchange. The returned message is the caller's own.
func (srv *Server) resolve(ctx context.Context, req *request) (*dns.Msg, error) {
	q := req.q
	do := req.opt != nil && req.opt.Do()
	key := cacheKey(q.Question[0], q.RecursionDesired, q.CheckingDisabled, do)
	now := srv.now()
	cached, fresh, ok := srv.cache.get(key, now)
	if ok && fresh {
		srv.st.cacheHits.Add(1)
		if srv.deps.Observer.CacheHit != nil {
			srv.deps.Observer.CacheHit()
		}
		return srv.reply(req, cached), nil
	}
	srv.st.cacheMisses.Add(1)
	v, err, shared := srv.flight.Do(key, func() (any, error) {
		up := new(dns.Msg)
		up.Id = q.Id
		up.Opcode = dns.OpcodeQuery
		up.RecursionDesired = q.RecursionDesired
		up.CheckingDisabled = q.CheckingDisabled
		up.Question = []dns.Question{q.Question[0]}
		up.SetEdns0(srv.s.UpstreamUDPSize, do)
		// Detached from the first caller: its cancellation must not fail the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), srv.s.QueryTimeout)
		defer cancel()
		r, err := srv.fwd.forward(fctx, up)
		if err != nil {
			return nil, err
		}
		if n := scrubAnswer(r); n > 0 { // program.go
			srv.st.scrubbed.Add(uint64(n))
		}
		if !srv.s.KeepECH {
			stripECH(r) // ech.go
		}
		minimize(r, do)            // sections.go
		srv.capAnswer(ctx, req, r) // limits.go
		return srv.cache.put(key, r, srv.now()), nil
	})
	if shared {
		srv.st.coalesced.Add(1)
	}
	if err != nil {
		if ok { // expired but inside the serve-stale window
			srv.st.staleServed.Add(1)
			return srv.reply(req, cached), nil
		}
		return nil, err
	}
	return srv.reply(req, copyWithTTL(v.(*dns.Msg), func(t uint32) uint32 { return t })), nil
}
