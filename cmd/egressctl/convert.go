package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy/calico"
	"github.com/egressd/egressd/policy/manifest"
)

const convertHelp = `
Convert Calico policies (projectcalico.org/v3 Tier, NetworkPolicy,
GlobalNetworkPolicy) into egressd ClusterFirewallPolicy objects, written as YAML
on stdout.

Calico's order is kept: every policy becomes a ClusterFirewallPolicy of the Admin
tier (the tier whose rules match first), with priorities in Calico's order (tier
order, then policy order, then name; rules in order), a NetworkPolicy's subject
being its namespace. Calico's end-of-tier drop is a second ClusterFirewallPolicy
per policy, after the last policy of its tier, denying the directions of its types
for the endpoints it selects (not for a tier whose defaultAction is Pass).
Selectors (==, !=, in, not in, has(), !, &&, ||, all()) become label selectors,
one peer or policy per || alternative; projectcalico.org/name in a namespace
selector is kubernetes.io/metadata.name. Domains keep Calico's wildcard meaning
("*.example.com" matches one or more labels: "**.example.com").

With --to egressd or --to clusternetworkpolicy, the input is egressd's and
upstream's cluster kinds instead: ClusterNetworkPolicy (policy.networking.k8s.io)
becomes ClusterFirewallPolicy where the meaning is kept, and the reverse;
what the target kind cannot express (nodes peers, a Baseline Pass; Audit mode,
FQDN Deny rules, one-label or in-label wildcards, except, tunnelDetection,
dnsBypass) is refused with the field.

What has no egressd equivalent is refused, on stderr, with the document, the
field and the reason (Log, ICMP, notPorts, service accounts, network sets, ...);
the policy it belongs to is left out of the output.

Exit status: 0 when everything converted, 1 when anything was refused or could
not be read, 2 on a usage error.`

func runConvert(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("convert", "-f PATH [-f PATH...] [--to egressd|clusternetworkpolicy] [PATH...]", convertHelp)
	var paths stringList
	fs.Var(&paths, "f", "Calico policy file or directory `PATH` (repeatable)")
	to := fs.String("to", "", "convert between egressd's and upstream's cluster kinds instead: `egressd` (ClusterNetworkPolicy → ClusterFirewallPolicy) or clusternetworkpolicy (the reverse)")
	if code, done := parse(fs, args, stdout, stderr); done {
		return code
	}
	paths = append(paths, fs.Args()...)
	if len(paths) == 0 {
		return usageError(fs, stderr, "no input: give -f PATH")
	}
	if *to != "" {
		return convertCNP(fs, *to, paths, stdout, stderr)
	}
	var inputs []calico.Input
	failed := false
	for _, path := range paths {
		files, err := manifest.Files(path)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", path, pathError(err))
			failed = true
			continue
		}
		for _, f := range files {
			data, err := manifest.DefaultLimits.ReadFile(f)
			if err != nil {
				fmt.Fprintf(stderr, "%s: %s\n", f, pathError(err))
				failed = true
				continue
			}
			for i, doc := range manifest.SplitDocuments(data) {
				if len(bytes.TrimSpace(stripYAMLComments(doc))) == 0 {
					continue
				}
				inputs = append(inputs, calico.Input{Source: fmt.Sprintf("%s:%d", f, i+1), Doc: doc})
			}
		}
	}
	res := calico.Convert(inputs)
	for _, p := range res.Problems {
		fmt.Fprintln(stderr, p)
	}
	for i, p := range res.Policies {
		if err := writeConverted(stdout, p, res.From[i]); err != nil {
			return failf(fs, stderr, "%v", err)
		}
	}
	if failed || len(res.Problems) > 0 {
		return exitFail
	}
	return exitOK
}

// stripYAMLComments drops comment lines.
// writeConverted writes one converted object as a YAML document headed by the
// input it came from, without the empty status and creation time a typed
// object marshals.
func writeConverted(w io.Writer, obj any, from string) error {
	b, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encode %s: %w", from, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("encode %s: %w", from, err)
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	y, err := yaml.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", from, err)
	}
	_, err = fmt.Fprintf(w, "---\n# from %s\n%s", from, y)
	return err
}

func stripYAMLComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
	}
	return out
}
