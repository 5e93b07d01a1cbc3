package dnsproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// BlockMode is the response to a blocked lookup.
type BlockMode string

const (
	// BlockNXDomain answers NXDOMAIN (the default).
	BlockNXDomain BlockMode = "nxdomain"
	// BlockRefused answers REFUSED.
	BlockRefused BlockMode = "refused"
	// BlockSinkhole answers A queries with Config.SinkholeIPv4 and AAAA queries
	// with Config.SinkholeIPv6 (NOERROR without answer for other types).
	BlockSinkhole BlockMode = "sinkhole"
)

// ParseBlockMode parses "nxdomain", "refused" or "sinkhole" (case-insensitive).
func ParseBlockMode(s string) (BlockMode, error) {
	switch m := BlockMode(strings.ToLower(strings.TrimSpace(s))); m {
	case BlockNXDomain, BlockRefused, BlockSinkhole:
		return m, nil
	case "":
		return BlockNXDomain, nil
	}
	return "", fmt.Errorf("dnsproxy: block mode %q: want nxdomain, refused or sinkhole", s)
}

// Config is the resolver's configuration. The zero value of every field means
// its default (see Defaults); Validate reports every problem at once.
type Config struct {
	// Listen are the addresses ("host:port") served on UDP and TCP. Port 0
	// picks one ephemeral port shared by UDP and TCP (tests). Default
	// "169.254.20.10:53".
	Listen []string
	// UDPSockets is the number of UDP sockets per listen address, bound with
	// SO_REUSEPORT so that the kernel spreads queries over them. Default: the
	// number of CPUs.
	UDPSockets int
	// TCPIdleTimeout closes idle TCP connections (default 10s); TCPReadTimeout
	// bounds the wait for one query on a TCP connection and for slow clients
	// (default 2s).
	TCPIdleTimeout, TCPReadTimeout time.Duration
	// MaxInflight bounds the queries handled at once; queries beyond it are
	// answered REFUSED (default 4096; never more than half the file
	// descriptors above FDReserve, see TCPMaxConns).
	MaxInflight int
	// MaxInflightPerClient bounds the queries of one client address handled
	// at once (default 512; negative: no per-client bound). Queries beyond it
	// are answered REFUSED, so that a client whose queries are slow (names of
	// a silent zone) cannot take the whole MaxInflight from the others.
	MaxInflightPerClient int

	// TCPMaxConns bounds the open client TCP connections (default 4096;
	// negative: only the descriptor budget). It is lowered to half the
	// process's file descriptors above FDReserve (RLIMIT_NOFILE − FDReserve)
	// / 2; the other half bounds MaxInflight, whose upstream sockets take
	// descriptors too. TCPMaxConnsPerClient bounds the connections of one
	// client address (default 64; negative: none). Connections over a limit
	// are reset as soon as they are accepted.
	TCPMaxConns, TCPMaxConnsPerClient int
	// TCPMaxQueries is the number of queries answered on one TCP connection
	// before it is closed, cleanly: after the last reply (default 128;
	// negative: unlimited).
	TCPMaxQueries int
	// FDReserve is the number of file descriptors kept out of the budget of
	// TCP connections and queries in flight, for policy reloads, checkpoints,
	// the HTTP server, netlink and the listeners (default 256; negative: no
	// descriptor budget).
	FDReserve int

	// Upstreams are the resolvers forwarded to ("host:port"; a bare host gets
	// port 53), tried in order: the first healthy one answers. Required.
	Upstreams []string
	// Timeout is the time one exchange with one upstream may take (default
	// 2s); a query tries at most every upstream once.
	Timeout time.Duration
	// QueryTimeout bounds the whole resolution of one query, all upstreams
	// included (default 5s).
	QueryTimeout time.Duration
	// HealthInterval is the period of the health probe ("." NS) sent to every
	// upstream (default 1s; negative disables probing).
	HealthInterval time.Duration
	// MaxFails marks an upstream down after that many consecutive failed
	// exchanges (default 2); a successful probe or exchange marks it up.
	MaxFails int
	// UpstreamUDPSize is the EDNS0 buffer size advertised to upstreams (default
	// 1232); larger answers come back truncated and are retried over TCP.
	UpstreamUDPSize uint16

	// MaxUDPSize caps the client's advertised EDNS0 buffer size (default
	// 1232); replies over the client's size are truncated with TC set.
	MaxUDPSize uint16

	// CacheSize is the number of cached answers (default 10000; negative
	// disables the cache).
	CacheSize int
	// MinTTL and MaxTTL clamp the TTLs of cached positive answers, and with
	// them the TTLs sent to clients (defaults 0 and 1h).
	MinTTL, MaxTTL time.Duration
	// MaxNegativeTTL caps the TTL of negative answers (NXDOMAIN, NODATA), which
	// is otherwise min(SOA TTL, SOA MINIMUM) per RFC 2308 (default 5m).
	// Negative answers without SOA are not cached.
	MaxNegativeTTL time.Duration
	// ServeStale keeps expired answers that long and serves them (TTL
	// StaleTTL) when every upstream fails (RFC 8767). Zero disables it.
	ServeStale time.Duration
	// StaleTTL is the TTL of stale answers (default 30s).
	StaleTTL time.Duration
	// KeepECH keeps the "ech" SvcParam of HTTPS/SVCB answers; by default it
	// is removed before caching (ech.go), so that clients send a visible SNI.
	KeepECH bool
	// CheckpointCacheBytes bounds the cached answers a checkpoint carries
	// (packed size, most recently used first; default 32 MiB, negative: the
	// cache is not checkpointed).
	CheckpointCacheBytes int

	// RateLimit is the per-client query rate in queries per second (token
	// bucket; default 4000, negative disables). Queries beyond it are
	// answered REFUSED; over UDP in the socket's read loop, from the raw
	// query, without parsing it further.
	RateLimit float64
	// RateBurst is the bucket size (default max(1, 2×RateLimit)).
	RateBurst int
	// RateClients bounds the number of clients tracked by the rate limit and
	// of (client, answer) pairs tracked by RRL (default 65536 each; the least
	// recently seen are forgotten and start again with a full bucket).
	RateClients int
	// RRLRate is response-rate limiting: identical responses (same name,
	// type and response code) per second to one client over UDP (default
	// 2000, burst one second's worth; negative disables). TCP is exempt.
	RRLRate float64
	// RRLSlip: of the responses over RRLRate, every RRLSlip-th is sent as an
	// empty truncated reply (the client retries over TCP), the others are
	// dropped (default 2; negative: all dropped; 1: all truncated).
	RRLSlip int

	// BlockMode is the response to blocked lookups (default BlockNXDomain).
	BlockMode BlockMode
	// SinkholeIPv4 and SinkholeIPv6 are the sinkhole answers (defaults
	// 0.0.0.0 and ::).
	SinkholeIPv4, SinkholeIPv6 netip.Addr
	// BlockedTTL is the TTL of synthesized blocked answers (default 5s).
	BlockedTTL time.Duration

	// MinSetTTL is the least timeout written for an answer address (default
	// 5s); SetGrace is added to every timeout (default 10s), so that an
	// address stays in the set a little longer than the client caches it.
	// The timeout written is max(answer TTL, MinSetTTL) + SetGrace.
	MinSetTTL, SetGrace time.Duration
	// SetWriteTimeout bounds one kernel set write (default 1s); a failed or
	// timed-out write answers SERVFAIL.
	SetWriteTimeout time.Duration
	// MaxIPsPerAnswer bounds the addresses (A and AAAA) kept of one upstream
	// answer (default 256); the records beyond it are removed before the
	// answer is cached, so no client sees them, and counted in
	// Stats.IPsOverAnswerCap (limits.go).
	MaxIPsPerAnswer int
	// MaxIPsPerName bounds the addresses of one (workload, name) in the
	// kernel sets at once, entries that have not expired (default 1000, as
	// Cilium's --tofqdns-endpoint-max-ip-per-hostname). MaxElementsPerWorkload
	// bounds the set elements written for one workload that have not expired
	// (default 16384, as Cilium's per-endpoint policy map; an address counts
	// once per rule and workload IP of its family). Beyond either bound a new
	// address is not written and its record is removed from the reply; an
	// answer left without addresses is SERVFAIL (limits.go). What is in the
	// sets is never evicted early.
	MaxIPsPerName, MaxElementsPerWorkload int
	// SweepInterval is how often expired answer addresses are dropped from
	// the tracker and the reference model (policy.Store) (default 30s).
	SweepInterval time.Duration

	// Rebinding protection (rebind.go): answer addresses in 0.0.0.0/8, ::,
	// 127.0.0.0/8, ::1, 169.254.0.0/16 and fe80::/10 are always dropped; the
	// node's addresses and the cluster CIDRs below are dropped from answers
	// of names outside the cluster domain and the search domains.
	//
	// RebindNodeAddrs are the node's own addresses (the agent lists them at
	// start).
	RebindNodeAddrs []netip.Addr
	// RebindClusterCIDRs are the cluster's Service and pod CIDRs.
	RebindClusterCIDRs []netip.Prefix
	// RebindAllow are exceptions: addresses inside them are never dropped
	// (0.0.0.0/0 and ::/0 turn the protection off).
	RebindAllow []netip.Prefix
	// ServeUnknown says which sources that are no known workload are served
	// without policy (unknown.go): CIDR prefixes or addresses, and the
	// keyword "node" (ServeUnknownNode: the addresses of the node's
	// interfaces — each address itself, not its subnet — and loopback), or
	// "none" alone (ServeUnknownNone). Every other unknown source is refused
	// (REFUSED, EDE 18 "egressd: unknown client"). Default ["node"]. Only
	// with Deps.Engine: without one there is no policy and every source is
	// served.
	ServeUnknown []string
	// UnknownWait is how long a query from an unknown source that is not
	// served waits for its address to appear in the store (a pod the source
	// has not delivered yet) before it is refused (default 200ms; negative:
	// no wait).
	UnknownWait time.Duration
	// MaxUnknownWaiters bounds the queries waiting at once (default 256);
	// beyond it, unknown sources are refused without waiting.
	MaxUnknownWaiters int
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	if len(c.Listen) == 0 {
		c.Listen = []string{"169.254.20.10:53"}
	}
	if c.UDPSockets == 0 {
		c.UDPSockets = runtime.NumCPU()
	}
	if c.MaxIPsPerAnswer <= 0 {
		c.MaxIPsPerAnswer = 256
	}
	if c.MaxIPsPerName <= 0 {
		c.MaxIPsPerName = 1000
	}
	if c.MaxElementsPerWorkload <= 0 {
		c.MaxElementsPerWorkload = 16384
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.TCPIdleTimeout, 10*time.Second)
	def(&c.TCPReadTimeout, 2*time.Second)
	def(&c.Timeout, 2*time.Second)
	def(&c.QueryTimeout, 5*time.Second)
	def(&c.HealthInterval, time.Second)
	def(&c.SweepInterval, 30*time.Second)
	def(&c.MaxTTL, time.Hour)
	def(&c.MaxNegativeTTL, 5*time.Minute)
	def(&c.StaleTTL, 30*time.Second)
	def(&c.BlockedTTL, 5*time.Second)
	def(&c.MinSetTTL, 5*time.Second)
	def(&c.SetGrace, 10*time.Second)
	def(&c.SetWriteTimeout, time.Second)
	def(&c.UnknownWait, 200*time.Millisecond)
	if len(c.ServeUnknown) == 0 {
		c.ServeUnknown = []string{ServeUnknownNode}
	}
	if c.MaxUnknownWaiters == 0 {
		c.MaxUnknownWaiters = 256
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 4096
	}
	if c.MaxInflightPerClient == 0 {
		c.MaxInflightPerClient = 512
	}
	if c.TCPMaxConns == 0 {
		c.TCPMaxConns = 4096
	}
	if c.TCPMaxConnsPerClient == 0 {
		c.TCPMaxConnsPerClient = 64
	}
	if c.TCPMaxQueries == 0 {
		c.TCPMaxQueries = 128
	}
	if c.FDReserve == 0 {
		c.FDReserve = 256
	}
	if c.RRLRate == 0 {
		c.RRLRate = 2000
	}
	if c.RRLSlip == 0 {
		c.RRLSlip = 2
	}
	if c.MaxFails == 0 {
		c.MaxFails = 2
	}
	if c.UpstreamUDPSize == 0 {
		c.UpstreamUDPSize = 1232
	}
	if c.MaxUDPSize == 0 {
		c.MaxUDPSize = 1232
	}
	if c.CacheSize == 0 {
		c.CacheSize = 10000
	}
	if c.CheckpointCacheBytes == 0 {
		c.CheckpointCacheBytes = 32 << 20
	}
	if c.RateLimit == 0 {
		c.RateLimit = 4000
	}
	if c.RateLimit > 0 && c.RateBurst == 0 {
		c.RateBurst = max(1, int(2*c.RateLimit))
	}
	if c.RateClients == 0 {
		c.RateClients = 65536
	}
	if c.BlockMode == "" {
		c.BlockMode = BlockNXDomain
	}
	if !c.SinkholeIPv4.IsValid() {
		c.SinkholeIPv4 = netip.IPv4Unspecified()
	}
	if !c.SinkholeIPv6.IsValid() {
		c.SinkholeIPv6 = netip.IPv6Unspecified()
	}
	return c
}

// Validate checks the configuration with defaults applied and returns every
// problem found, each naming its field.
func (c Config) Validate() error {
	c = c.Defaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("dnsproxy: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	for _, l := range c.Listen {
		if _, err := netip.ParseAddrPort(l); err != nil {
			bad("Listen", "%q is not an IP:port address (%v)", l, err)
		}
	}
	if len(c.Upstreams) == 0 {
		bad("Upstreams", "at least one upstream is required")
	}
	for _, u := range c.Upstreams {
		if _, err := normalizeUpstream(u); err != nil {
			bad("Upstreams", "%v", err)
		}
	}
	if c.UDPSockets < 0 || c.UDPSockets > 1024 {
		bad("UDPSockets", "%d out of range 1..1024", c.UDPSockets)
	}
	for name, d := range map[string]time.Duration{
		"TCPIdleTimeout": c.TCPIdleTimeout, "TCPReadTimeout": c.TCPReadTimeout,
		"Timeout": c.Timeout, "QueryTimeout": c.QueryTimeout, "SetWriteTimeout": c.SetWriteTimeout,
	} {
		if d < 0 {
			bad(name, "negative duration %v", d)
		}
	}
	for name, d := range map[string]time.Duration{
		"MinTTL": c.MinTTL, "MaxTTL": c.MaxTTL, "MaxNegativeTTL": c.MaxNegativeTTL,
		"ServeStale": c.ServeStale, "StaleTTL": c.StaleTTL, "BlockedTTL": c.BlockedTTL,
		"MinSetTTL": c.MinSetTTL, "SetGrace": c.SetGrace,
	} {
		if d < 0 {
			bad(name, "negative duration %v", d)
		} else if d%time.Second != 0 {
			bad(name, "%v is not a whole number of seconds (DNS TTLs are seconds)", d)
		}
	}
	if c.MinTTL > c.MaxTTL {
		bad("MinTTL", "%v exceeds MaxTTL %v", c.MinTTL, c.MaxTTL)
	}
	if c.Timeout > c.QueryTimeout {
		bad("Timeout", "%v exceeds QueryTimeout %v", c.Timeout, c.QueryTimeout)
	}
	if c.MaxInflight < 0 {
		bad("MaxInflight", "negative %d", c.MaxInflight)
	}
	if _, _, err := parseServeUnknown(c.ServeUnknown); err != nil {
		bad("ServeUnknown", "%v", err)
	}
	if c.MaxUnknownWaiters < 0 {
		bad("MaxUnknownWaiters", "negative %d", c.MaxUnknownWaiters)
	}
	if c.MaxFails < 0 {
		bad("MaxFails", "negative %d", c.MaxFails)
	}
	if c.UpstreamUDPSize < 512 {
		bad("UpstreamUDPSize", "%d is below 512", c.UpstreamUDPSize)
	}
	if c.MaxUDPSize < 512 {
		bad("MaxUDPSize", "%d is below 512", c.MaxUDPSize)
	}
	if c.RateBurst < 0 {
		bad("RateBurst", "negative %d", c.RateBurst)
	}
	if c.RateClients < 1 {
		bad("RateClients", "%d is below 1", c.RateClients)
	}
	if _, err := ParseBlockMode(string(c.BlockMode)); err != nil {
		bad("BlockMode", "%q: want nxdomain, refused or sinkhole", c.BlockMode)
	}
	if !c.SinkholeIPv4.Unmap().Is4() {
		bad("SinkholeIPv4", "%v is not an IPv4 address", c.SinkholeIPv4)
	}
	for name, ps := range map[string][]netip.Prefix{"RebindAllow": c.RebindAllow, "RebindClusterCIDRs": c.RebindClusterCIDRs} {
		for _, p := range ps {
			if !p.IsValid() {
				bad(name, "invalid prefix %v", p)
			}
		}
	}
	for _, a := range c.RebindNodeAddrs {
		if !a.IsValid() {
			bad("RebindNodeAddrs", "invalid address")
		}
	}
	if !c.SinkholeIPv6.Is6() || c.SinkholeIPv6.Is4In6() {
		bad("SinkholeIPv6", "%v is not an IPv6 address", c.SinkholeIPv6)
	}
	return errors.Join(errs...)
}

// normalizeUpstream returns "host:port" for an upstream, adding port 53.
func normalizeUpstream(u string) (string, error) {
	if a, err := netip.ParseAddr(strings.Trim(u, "[]")); err == nil {
		return net.JoinHostPort(a.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(u)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port (%v)", u, err)
	}
	if host == "" {
		return "", fmt.Errorf("%q has no host", u)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("%q: port %q out of range 1..65535", u, port)
	}
	return net.JoinHostPort(host, port), nil
}

// settings is the validated, parsed configuration the hot path reads.
type settings struct {
	Config
	listen    []netip.AddrPort
	upstreams []string
	minTTL    uint32
	maxTTL    uint32
	maxNeg    uint32
	staleTTL  uint32
	blocked   uint32
	minSetTTL uint32
	grace     uint32
	rebindOff bool // RebindAllow covers every address
	// maxInflight and tcpMaxConns are MaxInflight and TCPMaxConns within
	// the file descriptor budget (0: unbounded).
	maxInflight, tcpMaxConns int

	serveUnknown []netip.Prefix
	serveNode    bool
}

func compile(c Config) (*settings, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.Defaults()
	s := &settings{Config: c}
	for _, l := range c.Listen {
		s.listen = append(s.listen, netip.MustParseAddrPort(l))
	}
	for _, u := range c.Upstreams {
		n, _ := normalizeUpstream(u)
		s.upstreams = append(s.upstreams, n)
	}
	sec := func(d time.Duration) uint32 { return uint32(min(d/time.Second, 1<<31-1)) }
	s.minTTL, s.maxTTL, s.maxNeg = sec(c.MinTTL), sec(c.MaxTTL), sec(c.MaxNegativeTTL)
	s.staleTTL, s.blocked = sec(c.StaleTTL), sec(c.BlockedTTL)
	s.minSetTTL, s.grace = sec(c.MinSetTTL), sec(c.SetGrace)
	s.BlockMode, _ = ParseBlockMode(string(c.BlockMode))
	all4, all6 := false, false
	for _, p := range c.RebindAllow {
		all4 = all4 || (p.Addr().Is4() && p.Bits() == 0)
		all6 = all6 || (p.Addr().Is6() && p.Bits() == 0)
	}
	s.rebindOff = all4 && all6
	s.serveUnknown, s.serveNode, _ = parseServeUnknown(c.ServeUnknown)
	s.SinkholeIPv4 = s.SinkholeIPv4.Unmap()
	s.maxInflight, s.tcpMaxConns = max(c.MaxInflight, 0), max(c.TCPMaxConns, 0)
	if c.FDReserve > 0 {
		if nofile, err := nofileLimit(); err == nil {
			s.tcpMaxConns, s.maxInflight = withinBudget(s.tcpMaxConns, s.maxInflight, nofile, c.FDReserve)
		}
	}
	return s, nil
}
