package agent

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/dnsproxy"
)

// rebindConfig are the DNS rebinding protection flags (dnsproxy/rebind.go).
type rebindConfig struct {
	// RebindAllow are CIDRs never dropped from answers.
	RebindAllow []string
	// ClusterCIDRs are the cluster's Service and pod CIDRs, dropped from
	// answers of names outside the cluster domain.
	ClusterCIDRs []string
}

func registerRebindFlags(fs *flag.FlagSet, c *Config) {
	fs.Var(listFlag{&c.RebindAllow}, "rebind-allow", "CIDRs or addresses never dropped from DNS answers by rebinding protection (which drops 0.0.0.0/8, ::, 127.0.0.0/8, ::1, 169.254.0.0/16, fe80::/10, the node's addresses and --cluster-cidr); repeatable or comma-separated; 0.0.0.0/0,::/0 turns the protection off")
	fs.Var(listFlag{&c.ClusterCIDRs}, "cluster-cidr", "the cluster's Service and pod CIDRs: dropped from DNS answers of names outside --cluster-domain and --search-domain (rebinding protection); repeatable or comma-separated")
}

func (c *rebindConfig) validateRebind() error {
	var errs []error
	for flagName, v := range map[string][]string{"--rebind-allow": c.RebindAllow, "--cluster-cidr": c.ClusterCIDRs} {
		for _, s := range v {
			if _, err := dnsproxy.ParsePrefixList(s); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: want a CIDR or an address", flagName, truncate(s)))
			}
		}
	}
	return errors.Join(errs...)
}

// rebindPrefixes parses validated flag values.
func rebindPrefixes(v []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range v {
		ps, _ := dnsproxy.ParsePrefixList(s)
		out = append(out, ps...)
	}
	return out
}

// truncate keeps flag values in errors short.
func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
