// Package dnsproxy owns the node-local resolver (docs/design.md §1, §4): the DNS
// listeners (UDP with SO_REUSEPORT sockets, TCP), the forwarder with
// health-checked failover, the cache, the policy hook and the programming of the
// kernel sets with the addresses of allowed answers.
//
// Every query runs the same steps, in this order, on one of two paths:
//
//		classify → decide → resolve → decide the answer's chain → program → report
//
//	  - classify: malformed or hostile queries get FORMERR/NOTIMP/REFUSED (or are
//	    dropped); the per-client rate limit and the in-flight caps answer REFUSED.
//	  - decide: client IP → workload (policy.Store), then one call to the engine
//	    (Engine.DecideLookupRules: the decision and the FQDN rules whose sets the
//	    answer fills; the engine normalises the name once and the lookup carries
//	    it, lookup.go). A client that is no workload is served without policy
//	    only when Config.ServeUnknown allows it (the node itself by default);
//	    otherwise it waits briefly for the store and is then REFUSED (unknown.go).
//	    A denied lookup gets the configured response (NXDOMAIN, REFUSED or a
//	    sinkhole address) with an Extended DNS Error (RFC 8914, code 15 Blocked).
//	  - resolve: from the cache (positive and negative TTLs, serve-stale) or from
//	    an upstream (identical in-flight queries coalesced, random IDs and a
//	    fresh socket per exchange, answers validated against the question, TCP
//	    retry on truncation).
//	  - decide the answer's chain: every CNAME/DNAME link of the answer is decided
//	    too (Engine.DecideChain); a Deny rule on a link blocks the lookup.
//	  - program: every A/AAAA of the answer (CNAME chain included) is written as a
//	    (workload IP, answer IP) pair with a timeout into the kernel set of every
//	    enforced FQDN rule matching the name, in ONE ipset.Manager.Apply; the reply
//	    is sent only after the write succeeded and its TTLs never exceed the
//	    timeout written. A failed write answers SERVFAIL (fail closed). setOps
//	    (program.go) is the one place where (rules, sources, addresses) become set
//	    operations: the slow path, the fast path and Restore all use it.
//	  - report: the lookup's events (Deps.Events), counters (Stats), the Observer.
//
// The two paths: the slow path (slowpath.go) is the miekg/dns Handler, for
// every query over TCP and every UDP query the fast path leaves to it. The fast
// path (fastpath.go) runs in the read loop of each UDP socket and answers fresh
// cache hits at the wire level; it takes the same decisions (cached per store
// generation) and leaves everything unusual to the slow path.
//
// Files:
//
//	doc.go           this overview
//	config.go        Config, its defaults and validation, the compiled settings
//	server.go        Server, Deps, New, the listeners (UDP SO_REUSEPORT sockets, TCP), Start, Shutdown, Handover
//	slowpath.go      ServeDNS and handle: the query path for TCP and the UDP queries the fast path leaves
//	fastpath.go      the UDP read loop: rate limit from raw bytes, and fresh cache hits answered at the wire level
//	wire.go          the fast path's wire forms: a plain query parsed from raw bytes, a cache entry packed as a reply
//	classify.go      step classify: what the resolver does not serve
//	lookup.go        step decide: the lookup of a workload (decision, FQDN rules, alias chain links); the fast path's caches of them
//	unknown.go       clients that are no workload: served, waited for or refused
//	tunnelhook.go    DNS tunnel detection on the query path (*tunnel.Detector behind TunnelDetector, its method set)
//	resolve.go       step resolve: the cache, else one coalesced upstream exchange
//	upstream.go      the forwarder: upstreams, failover, health probes, TCP retry
//	forward_pool.go  upstream UDP sockets dialed ahead of the query path
//	cache.go         the answer cache (golang-lru/v2), TTL clamps, serve-stale
//	sections.go      minimal responses: what the authority and additional sections keep
//	ech.go           ECH configurations stripped from HTTPS/SVCB answers
//	rebind.go        rebinding protection: addresses of private ranges dropped from answers
//	program.go       step program: setOps, the one place an answer becomes set operations, and the write
//	limits.go        the bounds on what answers put into the sets (per answer, name, workload)
//	tracker.go       the name → IP state of what was written, its bounds and expiry
//	checkpoint.go    Checkpoint, Restore, RestoreCache: the state carried across restarts
//	statefile.go     StateFile: the checkpoint file written, merged and locked across a restart handover
//	reply.go         the replies the resolver builds: errors, blocked answers, EDE, truncation; events
//	ratelimit.go     per-client token bucket and response rate limiting (RRL)
//	tcplimit.go      TCP connection limits, idle and query caps, descriptor budget
//	stats.go         Stats counters, Observer
//
// Events (blocked, audited and allowed lookups, tunnel, rebinding and
// answer-cap events) are telemetry/event Events emitted to Deps.Events; the
// package does not depend on telemetry itself.
package dnsproxy
