package agent

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/egressd/egressd/policy"
)

// config is the agent's configuration; every field is a flag documented in
// docs/egressd.md.
type Config struct {
	tunnelConfig    // tunnel.go
	l7Config        // l7.go
	kubeConfig      // kube.go
	dnsConfig       // dns_flags.go
	rebindConfig    // rebind_flags.go
	dnsLimitsConfig // dns_limits.go
	sideDoorConfig  // sidedoors.go

	Policies       string
	Workloads      string
	ReloadInterval time.Duration

	Listen          []string
	LocalInterface  string
	Upstreams       []string
	BlockedResponse string
	Sinkhole        string
	MinSetTTL       time.Duration
	SetGrace        time.Duration
	CacheSize       int
	ServeStale      time.Duration
	RateLimit       float64

	Dataplane      string
	NetNS          string
	NodeName       string
	DefaultVerdict string
	Lookups        string
	ClusterDomain  string
	SearchDomains  []string
	StateFile      string

	CheckpointInterval time.Duration
	HandoverSettle     time.Duration
	MaxIPsPerName      int
	// MaxIPsPerAnswer and MaxElementsPerWorkload: the other bounds of what
	// answers put into the kernel sets (dnsproxy/limits.go).
	MaxIPsPerAnswer, MaxElementsPerWorkload int

	AuditLog     string
	AuditStdout  bool
	OTLPEndpoint string
	OTLPProtocol string
	// NFLogGroup > 0 logs dropped packets to that nflog group and reports them
	// as packet.denied events, at most DeniedEventsRate per second.
	InterceptDNS     []string
	NFLogGroup       int
	DeniedEventsRate float64
	HTTPAddr         string
	// HTTPTokenFile holds the bearer token /status and /metrics require
	// (http.go); needed when HTTPAddr is not a loopback address.
	HTTPTokenFile string
	// ReadyRequiresValidPolicies: /readyz fails while a policy or workloads
	// file is not taken (its last good content is in force).
	ReadyRequiresValidPolicies bool
	// UpstreamDownGrace: /readyz fails once no upstream has answered for
	// this long (0: never).
	UpstreamDownGrace time.Duration
	LogLevel          string
	LogFormat         string

	// serviceUpstreams: the cluster DNS Service's addresses, the upstreams
	// when --upstream is empty in cluster mode (set by the agent at start).
	serviceUpstreams []string
	// serviceMoved: the Service's cluster IPs last logged as moved away.
	serviceMoved []string
}

type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.v = append(*l.v, part)
		}
	}
	return nil
}

// parseFlags parses args into a config; usage errors come back as errors.
func ParseFlags(args []string, stderr *os.File) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("egressd", flag.ContinueOnError)
	if stderr != nil {
		fs.SetOutput(stderr)
	}
	fs.StringVar(&c.Policies, "policies", "", "policy file or directory (FirewallPolicy, ClusterFirewallPolicy, NetworkPolicy YAML); standalone mode")
	fs.StringVar(&c.Workloads, "workloads", "", "workloads file (namespaces and pods with labels and IPs); standalone mode")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", 2*time.Second, "how often the policy and workload files are checked for changes")
	fs.Var(listFlag{&c.Listen}, "listen", "DNS listen address host:port, UDP and TCP; repeatable or comma-separated (default 169.254.20.10:53)")
	fs.StringVar(&c.LocalInterface, "local-interface", "egressd0", "dummy interface the --listen addresses are added to when the node does not have them (created if missing, kept on exit); empty: the addresses must exist")
	fs.Var(listFlag{&c.Upstreams}, "upstream", "upstream resolver host:port; repeatable, tried in order with failover (default: in cluster mode the cluster IPs of --dns-service on port 53, else the nameservers of /etc/resolv.conf)")
	fs.StringVar(&c.BlockedResponse, "blocked-response", "nxdomain", "answer to a blocked lookup: nxdomain, refused or sinkhole")
	fs.StringVar(&c.Sinkhole, "sinkhole", "0.0.0.0,::", "addresses answered for blocked lookups with --blocked-response=sinkhole")
	fs.DurationVar(&c.MinSetTTL, "min-set-ttl", 5*time.Second, "minimum lifetime of an answer address in an FQDN kernel set")
	fs.DurationVar(&c.SetGrace, "set-grace", 10*time.Second, "grace added to max(answer TTL, --min-set-ttl) for FQDN kernel set entries")
	fs.IntVar(&c.CacheSize, "cache-size", 10000, "number of cached answers (negative disables the cache)")
	fs.DurationVar(&c.ServeStale, "serve-stale", 0, "keep expired answers this long and serve them when every upstream fails (0: off)")
	fs.Float64Var(&c.RateLimit, "rate-limit", 4000, "per-client query rate limit in queries per second, burst twice that (0: off); excess queries get REFUSED")
	fs.StringVar(&c.Dataplane, "dataplane", "nftables", "kernel dataplane: nftables, or none (DNS policy only)")
	fs.StringVar(&c.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name: only its workloads are enforced (default $NODE_NAME; empty enforces all)")
	fs.StringVar(&c.DefaultVerdict, "default-verdict", "Allow", "verdict for traffic no policy decides: Allow or Deny")
	fs.StringVar(&c.Lookups, "lookups", "Observe", "node default for lookups no Allow FQDN rule matches, for restricted workloads: Observe or Enforce")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain; names inside it are never blocked by FQDN rules")
	fs.Var(listFlag{&c.SearchDomains}, "search-domain", "extra search domain whose names are never blocked by FQDN rules; repeatable")
	fs.StringVar(&c.StateFile, "state-file", "/var/lib/egressd/state.json", "checkpoint of the name → IP state, written atomically every --checkpoint-interval and on shutdown, restored on start (empty: none)")
	fs.DurationVar(&c.CheckpointInterval, "checkpoint-interval", 10*time.Second, "how often --state-file is written")
	fs.DurationVar(&c.HandoverSettle, "handover-settle", 500*time.Millisecond, "on SIGTERM, how long the resolver keeps serving queries already queued on its sockets after steering new ones to its successor")
	fs.IntVar(&c.MaxIPsPerAnswer, "max-ips-per-answer", 256, "addresses (A and AAAA) kept of one upstream answer; the records beyond are removed before caching")
	fs.IntVar(&c.MaxIPsPerName, "max-ips-per-name", 1000, "addresses of one (workload, name) in the kernel sets at once; beyond it new addresses are not written and are removed from replies")
	fs.IntVar(&c.MaxElementsPerWorkload, "max-elements-per-workload", 16384, "kernel set elements of one workload at once (an address counts once per rule and workload IP); beyond it new addresses are not written and are removed from replies")
	fs.StringVar(&c.AuditLog, "audit-log", "", "file to append audit events to (JSON lines)")
	fs.BoolVar(&c.AuditStdout, "audit-stdout", false, "also write audit events to stdout")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", "", "OTLP trace endpoint host:port (empty: no traces)")
	fs.StringVar(&c.OTLPProtocol, "otlp-protocol", "grpc", "OTLP protocol: grpc or http")
	fs.Var(listFlag{&c.InterceptDNS}, "intercept-dns", "cluster DNS Service address host:port whose UDP and TCP DNS from pods is redirected (nftables DNAT in table egressd) to the resolver; repeatable; \"auto\" (cluster mode): the cluster IPs of --dns-service on port 53, followed as the Service changes")
	fs.IntVar(&c.NFLogGroup, "nflog-group", 0, "log dropped packets to this nflog group (1-65535) and report them as packet.denied events (0: off)")
	fs.Float64Var(&c.DeniedEventsRate, "denied-events-rate", 50, "most packet.denied events reported per second (the rest are counted in the next event)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:9464", "address of /metrics, /healthz and /readyz")
	fs.StringVar(&c.HTTPTokenFile, "http-token-file", "", "file holding the bearer token that /status and /metrics require (Authorization: Bearer TOKEN); required when --http-addr is not a loopback address. /healthz and /readyz stay open (kubelet probes)")
	fs.BoolVar(&c.ReadyRequiresValidPolicies, "ready-requires-valid-policies", false, "/readyz fails (503) while a policy or workloads file is not taken (empty, cut mid-document, invalid); its last good content stays in force either way")
	fs.DurationVar(&c.UpstreamDownGrace, "upstream-down-grace", 10*time.Second, "/readyz fails (503) once every upstream has been marked down for this long (0: never); lookups fail closed (SERVFAIL) meanwhile either way")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	registerTunnelFlags(fs, c)
	registerL7Flags(fs, c)
	registerKubeFlags(fs, c)
	registerDNSFlags(fs, c)
	registerRebindFlags(fs, c)
	registerDNSLimitFlags(fs, c)
	registerSideDoorFlags(fs, c)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if len(c.Listen) == 0 {
		c.Listen = []string{"169.254.20.10:53"}
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	var errs []error
	switch c.BlockedResponse {
	case "nxdomain", "refused", "sinkhole":
	default:
		errs = append(errs, fmt.Errorf("--blocked-response %q: want nxdomain, refused or sinkhole", c.BlockedResponse))
	}
	switch c.Dataplane {
	case "nftables", "none":
	default:
		errs = append(errs, fmt.Errorf("--dataplane %q: want nftables or none", c.Dataplane))
	}
	switch policy.Verdict(c.DefaultVerdict) {
	case policy.Allow, policy.Deny:
	default:
		errs = append(errs, fmt.Errorf("--default-verdict %q: want Allow or Deny", c.DefaultVerdict))
	}
	switch policy.LookupMode(c.Lookups) {
	case policy.LookupsObserve, policy.LookupsEnforce:
	default:
		errs = append(errs, fmt.Errorf("--lookups %q: want Observe or Enforce", c.Lookups))
	}
	for _, s := range c.InterceptDNS {
		if s == interceptAuto { // kube_intercept.go
			continue
		}
		if _, err := netip.ParseAddrPort(s); err != nil {
			errs = append(errs, fmt.Errorf("--intercept-dns %q: want ip:port: %v", s, err))
		}
	}
	if len(c.InterceptDNS) > 0 && c.Dataplane != "nftables" {
		errs = append(errs, errors.New("--intercept-dns needs --dataplane nftables"))
	}
	if c.NFLogGroup < 0 || c.NFLogGroup > 65535 || c.DeniedEventsRate <= 0 {
		errs = append(errs, fmt.Errorf("--nflog-group must be 0-65535 and --denied-events-rate positive"))
	}
	switch c.OTLPProtocol {
	case "grpc", "http":
	default:
		errs = append(errs, fmt.Errorf("--otlp-protocol %q: want grpc or http", c.OTLPProtocol))
	}
	for _, s := range strings.Split(c.Sinkhole, ",") {
		if _, err := netip.ParseAddr(strings.TrimSpace(s)); err != nil {
			errs = append(errs, fmt.Errorf("--sinkhole %q: %v", s, err))
		}
	}
	if err := c.validateHTTP(); err != nil { // http.go
		errs = append(errs, err)
	}
	if err := c.validateKube(); err != nil { // cluster mode without --policies/--workloads
		errs = append(errs, err)
	}
	if err := c.validateSideDoors(); err != nil { // sidedoors.go
		errs = append(errs, err)
	}
	if err := c.validateDNS(); err != nil {
		errs = append(errs, err)
	}
	if err := c.validateRebind(); err != nil {
		errs = append(errs, err)
	}
	if err := c.validateDNSLimits(); err != nil { // dns_limits.go
		errs = append(errs, err)
	}
	if err := c.validateL7(); err != nil { // l7.go
		errs = append(errs, err)
	}
	if c.CheckpointInterval <= 0 || c.HandoverSettle < 0 {
		errs = append(errs, errors.New("--checkpoint-interval must be positive, --handover-settle must not be negative"))
	}
	if c.MaxIPsPerAnswer < 1 || c.MaxIPsPerName < 1 || c.MaxElementsPerWorkload < 1 {
		errs = append(errs, errors.New("--max-ips-per-answer, --max-ips-per-name and --max-elements-per-workload must be positive"))
	}
	if c.UpstreamDownGrace < 0 {
		errs = append(errs, errors.New("--upstream-down-grace must not be negative"))
	}
	if c.MinSetTTL < 0 || c.SetGrace < 0 || c.ReloadInterval <= 0 {
		errs = append(errs, errors.New("--min-set-ttl and --set-grace must not be negative, --reload-interval must be positive"))
	}
	return errors.Join(errs...)
}

// engineOptions are the policy engine's node settings from the flags.
func (c *Config) engineOptions() policy.Options {
	return policy.Options{
		DefaultVerdict: policy.Verdict(c.DefaultVerdict),
		Lookups:        policy.LookupMode(c.Lookups),
		ClusterDomain:  c.ClusterDomain,
		SearchDomains:  c.SearchDomains,
	}
}
