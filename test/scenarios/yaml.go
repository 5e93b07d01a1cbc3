package scenarios

import (
	"strings"

	"github.com/egressd/egressd/policy"
)

// netpol returns a networking.k8s.io/v1 NetworkPolicy document; spec is the
// YAML of its spec, written at column 0.
func netpol(ns, name, spec string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: " + name + ", namespace: \"" + ns + "\"}\nspec:\n" + indent(spec)
}

// firewall returns an egressd.io/v1alpha1 FirewallPolicy document.
func firewall(ns, name, spec string) string {
	return "apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: " + name + ", namespace: \"" + ns + "\"}\nspec:\n" + indent(spec)
}

// cluster returns an egressd.io/v1alpha1 ClusterFirewallPolicy document.
func cluster(name, spec string) string {
	return "apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: " + name + "}\nspec:\n" + indent(spec)
}

func indent(s string) string {
	s = strings.Trim(s, "\n")
	lines := strings.Split(s, "\n")
	// Remove the common leading tabs/spaces so that specs can be indented in Go source.
	prefix, set := "", false
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		lead := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if !set || len(lead) < len(prefix) {
			prefix, set = lead, true
		}
	}
	for i, l := range lines {
		lines[i] = "  " + strings.ReplaceAll(strings.TrimPrefix(l, prefix), "\t", "  ")
	}
	return strings.Join(lines, "\n") + "\n"
}

// Shorthands for expectations.
const (
	TCP  = policy.ProtocolTCP
	UDP  = policy.ProtocolUDP
	SCTP = policy.ProtocolSCTP
)

func ports(ps ...int32) []int32                      { return ps }
func protos(ps ...policy.Protocol) []policy.Protocol { return ps }
