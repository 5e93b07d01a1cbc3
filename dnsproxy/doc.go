// Package dnsproxy owns the node-local resolver (docs/design.md §1, §4): the DNS
// listeners (UDP with SO_REUSEPORT sockets, TCP), the forwarder with
// health-checked failover, the cache, the policy hook and the programming of the
// kernel sets with the addresses of allowed answers.
//
// The resolver is a miekg/dns Handler chain that runs, per query:
//
//		classify → decide → answer → program → reply
//
//	  - classify: malformed or hostile queries get FORMERR/NOTIMP/REFUSED (or are
//	    dropped); the per-client rate limit answers REFUSED.
//	  - decide: client IP → workload (policy.Store), policy.Engine.DecideLookup.
//	    A client that is no workload is served without policy only when
//	    Config.ServeUnknown allows it (the node itself by default); otherwise it
//	    waits briefly for the store and is then REFUSED (unknown.go).
//	    A denied lookup gets the configured response (NXDOMAIN, REFUSED or a
//	    sinkhole address) with an Extended DNS Error (RFC 8914, code 15 Blocked).
//	  - answer: from the cache (positive and negative TTLs, serve-stale) or from an
//	    upstream (identical in-flight queries coalesced, random IDs and a fresh
//	    socket per exchange, answers validated against the question, TCP retry on
//	    truncation).
//	  - program: every A/AAAA of the answer (CNAME chain included) is written as a
//	    (workload IP, answer IP) pair with a timeout into the kernel set of every
//	    enforced FQDN rule matching the name, in ONE ipset.Manager.Apply; the reply
//	    is sent only after the write succeeded and its TTLs never exceed the
//	    timeout written. A failed write answers SERVFAIL (fail closed).
//
// Config parsing and validation live in config.go; the hot path in handler.go,
// upstream.go, cache.go and program.go; counters and reporting hooks in stats.go.
// The package does not depend on the telemetry package: the agent adapts the
// Reporter interface and the Stats snapshot.
package dnsproxy
