package dnsproxy

import (
	"reflect"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// Observer receives latencies, so that the agent can export histograms. Nil
// fields are not called. Calls are made on the query path and must be cheap.
type Observer struct {
	// Upstream is called after every exchange with an upstream (UDP and TCP
	// retry separately); err is nil on success.
	Upstream func(upstream string, d time.Duration, err error)
	// SetWrite is called after every kernel set write (one Apply).
	SetWrite func(elements int, d time.Duration, err error)
	// Query is called when a reply has been written (or the query dropped),
	// with the total handling time and the response code.
	Query func(d time.Duration, rcode int)
	// Result is called with every query's outcome (one of the Result*
	// constants), after Query.
	Result func(result string)
	// CacheHit is called for every query answered from a fresh cache entry.
	CacheHit func()
	// UpstreamHealth is called when an upstream goes down (MaxFails
	// consecutive failures) or comes back up: once per transition.
	UpstreamHealth func(upstream string, up bool)
	// Rebinding is called for every answer address dropped by rebinding
	// protection, with its range (one of RebindRanges).
	Rebinding func(rng string)
}

// Outcomes of a query, as passed to Observer.Result (the values of the
// result label of egressd_dns_queries_total).
const (
	ResultAllowed = "allowed" // answered from the cache or an upstream
	ResultBlocked = "blocked" // refused by an enforced policy
	ResultAudit   = "audit"   // an Audit-mode policy would have blocked it; answered
	ResultTunnel  = "tunnel"  // refused by DNS tunnel detection
	ResultError   = "error"   // SERVFAIL: no upstream answered or the set write failed
	ResultRefused = "refused" // malformed, unsupported, rate-limited or overload: FORMERR/NOTIMP/REFUSED or dropped
)

// SetNamer names the kernel set of an FQDN rule for one address family (the
// agent passes the egress package's naming, built on policy.RuleID).
type SetNamer func(rule policy.RuleRef, family ipset.Family) string

// Stats is a snapshot of the resolver's counters since start.
type Stats struct {
	// Queries received by the handler (malformed ones rejected before the
	// handler are counted in Malformed only).
	Queries uint64
	// CacheHits and CacheMisses count cache lookups of forwarded queries;
	// StaleServed counts expired answers served because upstreams failed.
	CacheHits, CacheMisses, StaleServed uint64
	// Coalesced counts queries that waited for an identical in-flight query.
	Coalesced uint64
	// UpstreamQueries counts exchanges with upstreams; UpstreamErrors those
	// that failed (timeout, network error, bad answer); UpstreamTCPRetries the
	// retries over TCP of truncated answers; UpstreamMismatches the answers
	// dropped because their ID or question did not match the query.
	UpstreamQueries, UpstreamErrors, UpstreamTCPRetries, UpstreamMismatches uint64
	// ServFail counts SERVFAIL replies (upstreams failed or set write failed).
	ServFail uint64
	// Blocked counts lookups refused by an enforced policy; Audited those an
	// Audit-mode policy would have refused.
	Blocked, Audited uint64
	// SetWrites counts kernel set writes (one Apply each), SetElements the
	// elements written, SetWriteFailures the failed writes.
	SetWrites, SetElements, SetWriteFailures uint64
	// RateLimited counts queries refused by the per-client rate limit;
	// Overloaded those refused because MaxInflight was reached.
	RateLimited, Overloaded uint64
	// Malformed counts queries rejected as malformed or unsupported (FORMERR,
	// NOTIMP, REFUSED for unsupported classes or types, dropped responses).
	Malformed uint64
	// Truncated counts replies truncated to the client's buffer size.
	Truncated uint64
	// Scrubbed counts upstream answer records removed because their owner is
	// not on the question's CNAME chain (addresses of other names).
	Scrubbed uint64
	// Swept counts expired (workload, name, address) records dropped from
	// the tracker and the reference model by the periodic sweep.
	Swept uint64
	// IPsOverAnswerCap counts address records removed from upstream answers
	// beyond MaxIPsPerAnswer; IPsOverNameCap and IPsOverWorkloadCap count
	// the addresses not written (and removed from replies) because their
	// (workload, name) held MaxIPsPerName addresses or their workload
	// MaxElementsPerWorkload set elements (limits.go).
	IPsOverAnswerCap, IPsOverNameCap, IPsOverWorkloadCap uint64
	// RebindDropped counts answer addresses dropped by rebinding protection
	// (rebind.go).
	RebindDropped uint64
	// ClientOverloaded counts queries refused because their client had
	// MaxInflightPerClient queries in flight.
	ClientOverloaded uint64
	// RRLTruncated and RRLDropped count UDP responses over RRLRate sent as
	// empty truncated replies and dropped.
	RRLTruncated, RRLDropped uint64
	// TCPAccepted counts client TCP connections accepted within the limits;
	// TCPRejectedClient and TCPRejectedGlobal those reset because their
	// client had TCPMaxConnsPerClient open or TCPMaxConns were open;
	// TCPIdleClosed those closed by the idle timeout (counted from the last
	// reply); TCPDrained those closed after a client pipelined past
	// TCPMaxQueries (write side shut, input drained); TCPAcceptErrors the
	// failed accepts (out of file descriptors).
	TCPAccepted, TCPRejectedClient, TCPRejectedGlobal, TCPIdleClosed, TCPDrained, TCPAcceptErrors uint64
	// TCPEvicted counts connections reset to make room, at TCPMaxConns, for
	// a client with fewer connections than their client.
	TCPEvicted uint64
	// TCPOpen is the number of client TCP connections open now and
	// TCPClients the number of client addresses they come from; Inflight the
	// queries in flight now.
	TCPOpen, TCPClients, Inflight int
	// UnknownServed counts queries from sources that are no known workload
	// served without policy (Config.ServeUnknown); UnknownWaits the queries
	// that waited for their source to appear in the store
	// (Config.UnknownWait); UnknownWaitsFull those refused without waiting
	// because MaxUnknownWaiters waited already; UnknownRefused the queries
	// refused because their source is no known workload (unknown.go).
	UnknownServed, UnknownWaits, UnknownWaitsFull, UnknownRefused uint64
}

// Counters returns every field of s keyed by its name ("Queries",
// "CacheHits", …, the keys of /status "resolver"); the gauges (TCPOpen,
// TCPClients, Inflight) are never negative.
func (s Stats) Counters() map[string]uint64 {
	v := reflect.ValueOf(s)
	out := make(map[string]uint64, v.NumField())
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			out[v.Type().Field(i).Name] = f.Uint()
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			out[v.Type().Field(i).Name] = uint64(max(f.Int(), 0))
		}
	}
	return out
}

type counters struct {
	queries, cacheHits, cacheMisses, staleServed, coalesced   atomic.Uint64
	upQueries, upErrors, upTCPRetries, upMismatches, servFail atomic.Uint64
	blocked, audited, setWrites, setElements, setFailures     atomic.Uint64
	rateLimited, overloaded, malformed, truncated             atomic.Uint64
	scrubbed, swept                                           atomic.Uint64
	overAnswer, overName, overWorkload                        atomic.Uint64
	rebindDropped                                             atomic.Uint64
	clientOverloaded, rrlTruncated, rrlDropped                atomic.Uint64
	tcpAccepted, tcpRejectedClient, tcpRejectedGlobal         atomic.Uint64
	tcpIdleClosed, tcpDrained, tcpAcceptErrors, tcpEvicted    atomic.Uint64
	unknownServed, unknownWaits, unknownWaitsFull             atomic.Uint64
	unknownRefused                                            atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Queries: c.queries.Load(), CacheHits: c.cacheHits.Load(), CacheMisses: c.cacheMisses.Load(),
		StaleServed: c.staleServed.Load(), Coalesced: c.coalesced.Load(),
		UpstreamQueries: c.upQueries.Load(), UpstreamErrors: c.upErrors.Load(),
		UpstreamTCPRetries: c.upTCPRetries.Load(), UpstreamMismatches: c.upMismatches.Load(),
		ServFail: c.servFail.Load(), Blocked: c.blocked.Load(), Audited: c.audited.Load(),
		SetWrites: c.setWrites.Load(), SetElements: c.setElements.Load(), SetWriteFailures: c.setFailures.Load(),
		RateLimited: c.rateLimited.Load(), Overloaded: c.overloaded.Load(),
		Malformed: c.malformed.Load(), Truncated: c.truncated.Load(),
		Scrubbed: c.scrubbed.Load(), Swept: c.swept.Load(),
		IPsOverAnswerCap: c.overAnswer.Load(), IPsOverNameCap: c.overName.Load(), IPsOverWorkloadCap: c.overWorkload.Load(),
		RebindDropped:    c.rebindDropped.Load(),
		ClientOverloaded: c.clientOverloaded.Load(),
		RRLTruncated:     c.rrlTruncated.Load(), RRLDropped: c.rrlDropped.Load(),
		TCPAccepted: c.tcpAccepted.Load(), TCPRejectedClient: c.tcpRejectedClient.Load(),
		TCPRejectedGlobal: c.tcpRejectedGlobal.Load(), TCPIdleClosed: c.tcpIdleClosed.Load(),
		TCPDrained: c.tcpDrained.Load(), TCPAcceptErrors: c.tcpAcceptErrors.Load(), TCPEvicted: c.tcpEvicted.Load(),
		UnknownServed: c.unknownServed.Load(), UnknownWaits: c.unknownWaits.Load(),
		UnknownWaitsFull: c.unknownWaitsFull.Load(), UnknownRefused: c.unknownRefused.Load(),
	}
}
