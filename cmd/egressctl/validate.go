package main

import (
	"encoding/json"
	"fmt"
	"io"
)

const validateHelp = `
Validate policy files: FirewallPolicy and ClusterFirewallPolicy (egressd.io/v1alpha1)
and NetworkPolicy (networking.k8s.io/v1), in multi-document YAML or JSON, with the
agent's own validation. PATH is a file or a directory (every .yaml, .yml and .json
file below it, in lexical order); paths may also be given as arguments.

Every problem is printed with its source (file:document, documents counted from 1),
the line of the file, its object (Kind/namespace/name), its field path and the reason.
Documents are checked against the CRD schema (required fields, types, enums, bounds,
unknown fields) as the API server does, then with the agent's validation. An object
defined twice (same kind, namespace and name) is a problem too.

Exit status: 0 when every object is valid, 1 when any problem was found, 2 on a
usage error.`

// validateResult is the JSON output of validate.
type validateResult struct {
	Valid  bool      `json:"valid"`
	Errors []problem `json:"errors"`
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", "-f PATH [-f PATH...] [-o text|json] [PATH...]", validateHelp)
	var paths stringList
	fs.Var(&paths, "f", "policy file or directory `PATH` (repeatable)")
	out := newChoice("text", "text", "json")
	fs.Var(out, "o", "output `format`: text or json")
	if code, done := parse(fs, args, stdout, stderr); done {
		return code
	}
	paths = append(paths, fs.Args()...)
	if len(paths) == 0 {
		return usageError(fs, stderr, "no policy files: give -f PATH")
	}
	ps := readPolicies(paths)
	res := validateResult{Valid: len(ps.problems) == 0, Errors: ps.problems}
	if res.Errors == nil {
		res.Errors = []problem{}
	}
	switch out.value {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return failf(fs, stderr, "%v", err)
		}
	default:
		for _, p := range ps.problems {
			fmt.Fprintln(stdout, p)
		}
		invalid := map[string]bool{}
		for _, p := range ps.problems {
			invalid[p.Source] = true
		}
		if res.Valid {
			fmt.Fprintf(stdout, "%s valid (%s)\n", plural(len(ps.objects), "object"), plural(len(ps.files), "file"))
		} else {
			fmt.Fprintf(stdout, "%s in %s (%s decoded from %s)\n", plural(len(ps.problems), "error"),
				plural(len(invalid), "document"), plural(len(ps.objects), "object"), plural(len(ps.files), "file"))
		}
	}
	if len(ps.objects) == 0 && len(ps.problems) == 0 {
		fmt.Fprintf(stderr, "%s: warning: no policy objects found in %v\n", fs.Name(), []string(paths))
	}
	if !res.Valid {
		return exitFail
	}
	return exitOK
}

func plural(n int, what string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}
