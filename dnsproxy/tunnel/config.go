package tunnel

import (
	"fmt"
	"strings"
	"time"
)

// Action is what the detector does about a (workload, registered domain) pair
// whose score reaches the threshold.
type Action uint8

const (
	// Off: nothing is tracked.
	Off Action = iota
	// Alert: a dns.tunnel.suspected event (span, audit line, metric).
	Alert
	// Block: Alert, plus further lookups of the registered domain by the
	// workload are refused for the quarantine period.
	Block
)

func (a Action) String() string {
	switch a {
	case Off:
		return "Off"
	case Alert:
		return "Alert"
	case Block:
		return "Block"
	}
	return fmt.Sprintf("Action(%d)", a)
}

// ParseAction parses "Off", "Alert" or "Block" (case-insensitive).
func ParseAction(s string) (Action, error) {
	switch strings.ToLower(s) {
	case "off":
		return Off, nil
	case "alert":
		return Alert, nil
	case "block":
		return Block, nil
	}
	return Off, fmt.Errorf("tunnel detection %q: want Off, Alert or Block", s)
}

// Config tunes the detector. The zero value of a field takes its default
// (docs/detection.md explains each).
type Config struct {
	// Action is the cluster/node default (default Alert; set ActionSet to use
	// Off explicitly).
	Action    Action
	ActionSet bool
	// ActionFor, when set, overrides Action per workload: it gets the
	// workload key the detector was given ("namespace/name", or whatever the
	// caller uses for clients that are not workloads) and returns the action
	// and true, or false when the default applies. It is called once or twice
	// per query (Blocked and Observe), so it must be cheap and must not
	// allocate; the agent feeds it from policy.Engine.TunnelDetection (cached
	// per store generation).
	ActionFor func(workload string) (Action, bool)

	// Threshold is the score at which a pair is suspected (default 1).
	Threshold float64
	// EncodedBytes is the estimated data in new names of a pair, over the
	// window, that alone scores 1 (default 320).
	EncodedBytes float64
	// UniqueNames is the number of new names of a pair over the window that
	// alone scores 1 (default 400).
	UniqueNames int
	// Window is the sliding window (default 1h, 12 buckets).
	Window time.Duration
	// Quarantine is how long Block refuses a pair's lookups (default 1h).
	Quarantine time.Duration
	// Realert is the minimum time between two dns.tunnel.suspected events of
	// one pair (default 10m).
	Realert time.Duration
	// MaxPairs bounds the tracked (workload, domain) pairs (LRU, default
	// 65536; about 400 bytes each).
	MaxPairs int

	// Allow lists registered domains (or any suffix) never scored, in addition
	// to DefaultAllow unless NoDefaultAllow.
	Allow          []string
	NoDefaultAllow bool
	// ClusterDomain (default cluster.local) and SearchDomains: names under
	// them are ignored (service names and search-path expansions).
	ClusterDomain string
	SearchDomains []string

	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultAllow are registered domains whose lookups legitimately look like
// tunnels: anti-virus and reputation lookups of file hashes and URLs, DNS
// block lists keyed by reversed addresses or hashed names.
var DefaultAllow = []string{
	// DNS block lists and reputation.
	"spamhaus.org", "spamhaus.net", "spamcop.net", "surbl.org", "uribl.com",
	"barracudacentral.org", "dnswl.org", "senderbase.org", "sorbs.net",
	"mailspike.net", "abuseat.org", "invaluement.com", "manitu.net",
	"nszones.com", "hostkarma.com", "junkemailfilter.com", "mailshell.net",
	"team-cymru.org", "team-cymru.com", "cymru.com", "dnsbl.info", "spameatingmonkey.net",
	"njabl.org", "abuse.ch", "s5h.net", "0spam.org",
	// Anti-virus and endpoint reputation (hash and URL lookups).
	"sophosxl.net", "gti.mcafee.com", "avts.mcafee.com", "avqs.mcafee.com",
	"trendmicro.com", "e5.sk", "eset.com", "eset.net", "sbl-xbl.spamhaus.org",
	"sophos.com", "avg.com", "avast.com", "kaspersky-labs.com", "bitdefender.net",
	"webroot.com", "brightcloud.com", "symantec.com", "norton.com",
	// Certificate/revocation and DNSSEC tooling that hashes names.
	"crl.microsoft.com",
}

func (c Config) withDefaults() Config {
	if !c.ActionSet && c.Action == Off {
		c.Action = Alert
	}
	if c.Threshold <= 0 {
		c.Threshold = 1
	}
	if c.EncodedBytes <= 0 {
		c.EncodedBytes = 320
	}
	if c.UniqueNames <= 0 {
		c.UniqueNames = 400
	}
	if c.Window <= 0 {
		c.Window = time.Hour
	}
	if c.Quarantine <= 0 {
		c.Quarantine = time.Hour
	}
	if c.Realert <= 0 {
		c.Realert = 10 * time.Minute
	}
	if c.MaxPairs <= 0 {
		c.MaxPairs = 65536
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
