package main

import (
	"fmt"
	"io"

	"github.com/egressd/egressd/policy/cnpconvert"
	"github.com/egressd/egressd/policy/manifest"
)

// convertCNP converts ClusterNetworkPolicy to ClusterFirewallPolicy (to
// "egressd") or the reverse (to "clusternetworkpolicy"), YAML on stdout; a
// policy with anything the target cannot express is left out and every
// reason printed on stderr.
func convertCNP(fs *flagSet, to string, paths []string, stdout, stderr io.Writer) int {
	if to != "egressd" && to != "clusternetworkpolicy" {
		return usageError(fs, stderr, "--to %q: want egressd or clusternetworkpolicy", to)
	}
	failed := false
	for _, path := range paths {
		objs, err := manifest.DecodePath(path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed = true
		}
		for _, o := range objs {
			var out any
			var probs []cnpconvert.Problem
			switch {
			case to == "egressd" && o.ClusterNetworkPolicy != nil:
				out, probs = cnpconvert.ToClusterFirewallPolicy(o.ClusterNetworkPolicy)
			case to == "clusternetworkpolicy" && o.ClusterFirewallPolicy != nil:
				out, probs = cnpconvert.ToClusterNetworkPolicy(o.ClusterFirewallPolicy)
			default:
				fmt.Fprintf(stderr, "%s: %s: not converted (--to %s converts %s)\n", o.Source, o.Ref(), to,
					map[string]string{"egressd": "ClusterNetworkPolicy", "clusternetworkpolicy": "ClusterFirewallPolicy"}[to])
				failed = true
				continue
			}
			if len(probs) > 0 {
				for _, p := range probs {
					fmt.Fprintf(stderr, "%s: %s: %s\n", o.Source, o.Ref(), p)
				}
				failed = true
				continue
			}
			if err := writeConverted(stdout, out, o.Source); err != nil {
				return failf(fs, stderr, "%v", err)
			}
		}
	}
	if failed {
		return exitFail
	}
	return exitOK
}
