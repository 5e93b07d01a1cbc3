package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egressd/egressd/telemetry/statusapi"
)

const statusHelp = `
Show the live state of a running egressd agent, from GET /status on its
--http-addr: policy sync state (source synced, store and applied plan
generations, last apply, errors, invalid policies), the kernel sets of its
nftables table with their element counts, the blocked lookups of the last
--since (count, top names and workloads, from the agent's in-memory ring of the
last 4096) and the resolver's counters.

  -o table  human-readable sections
  -o json   the agent's /status document as is

The agent is found at --agent (default $EGRESSD_AGENT, else
http://127.0.0.1:9464, the agent's default --http-addr). An agent started with
--http-token-file wants its bearer token: --token-file FILE, or the token in
$EGRESSD_TOKEN.

Exit status: 0 on success, 1 when the agent cannot be reached or answers an
error, 2 on a usage error.`

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", "[--agent URL] [--since 10m] [-o table|json] [--timeout 5s] [--token-file FILE]", statusHelp)
	def := os.Getenv("EGRESSD_AGENT")
	if def == "" {
		def = "http://127.0.0.1:9464"
	}
	agent := fs.String("agent", def, "the agent's HTTP `URL` (its --http-addr)")
	since := fs.Duration("since", 10*time.Minute, "count blocked lookups of this last `duration`")
	timeout := fs.Duration("timeout", 5*time.Second, "request `timeout`")
	tokenFile := fs.String("token-file", "", "`file` holding the agent's bearer token (its --http-token-file); default: $EGRESSD_TOKEN")
	out := newChoice("table", "table", "json")
	fs.Var(out, "o", "output `format`: table or json")
	if code, done := parse(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
	}
	if *since <= 0 {
		return usageError(fs, stderr, "--since must be positive")
	}
	base := *agent
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/status")
	if err != nil {
		return usageError(fs, stderr, "--agent %q: %v", *agent, err)
	}
	u.RawQuery = url.Values{"since": {since.String()}}.Encode()
	token := os.Getenv("EGRESSD_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return usageError(fs, stderr, "--token-file: %v", err)
		}
		token = string(b)
	}
	body, err := fetch(u.String(), strings.TrimSpace(token), *timeout)
	if err != nil {
		return failf(fs, stderr, "%v", err)
	}
	var st statusapi.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return failf(fs, stderr, "%s: not a status document: %v", u, err)
	}
	if out.value == "json" {
		_, _ = stdout.Write(body)
		return exitOK
	}
	printStatus(stdout, &st, *since)
	return exitOK
}

func fetch(u, token string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent unreachable: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printStatus(w io.Writer, st *statusapi.Status, since time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	node := st.Node
	if node == "" {
		node = "(all)"
	}
	fmt.Fprintf(tw, "Agent\tnode %s, ready %s, up %s\n", node, yesNo(st.Ready), st.Now.Sub(st.StartedAt).Round(time.Second))
	s := st.Sync
	fmt.Fprintf(tw, "Policy source\t%s, synced %s, store generation %d, %d policies, %d workloads\n",
		s.Source, yesNo(s.SourceSynced), s.StoreGeneration, s.Policies, s.Workloads)
	last := "never"
	if !s.LastApply.IsZero() {
		last = fmt.Sprintf("%s ago", st.Now.Sub(s.LastApply).Round(time.Millisecond))
	}
	fmt.Fprintf(tw, "Dataplane\t%s, plan generation %d applied, last apply %s\n", st.Dataplane, s.AppliedPlan, last)
	if s.LastError != "" {
		fmt.Fprintf(tw, "Last error\t%s\n", s.LastError)
	}
	if r := s.Reload; r != nil && !r.OK {
		fmt.Fprintf(tw, "Policy files\t%d not taken since %s (last good content in force): %s\n",
			r.Problems, r.Since.Format(time.RFC3339), r.LastError)
	}
	if len(st.Upstreams) > 0 {
		var ups []string
		for _, u := range st.Upstreams {
			state := "up"
			if !u.Up {
				state = fmt.Sprintf("DOWN for %s", st.Now.Sub(u.Since).Round(time.Second))
			}
			ups = append(ups, u.Addr+" "+state)
		}
		fmt.Fprintf(tw, "Upstreams\t%s\n", strings.Join(ups, ", "))
	}
	if len(st.Intercept) > 0 {
		fmt.Fprintf(tw, "DNS interception\t%s\n", strings.Join(st.Intercept, ", "))
	}
	tw.Flush()
	if len(s.InvalidPolicies) > 0 {
		fmt.Fprintf(w, "\nInvalid policies (previous version in force):\n")
		keys := make([]string, 0, len(s.InvalidPolicies))
		for k := range s.InvalidPolicies {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s: %s\n", k, s.InvalidPolicies[k])
		}
	}

	fmt.Fprintf(w, "\nKernel sets (table inet %s):\n", st.Table)
	if st.SetsError != "" {
		fmt.Fprintf(w, "  error: %s\n", st.SetsError)
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SET\tKIND\tELEMENTS")
	total := 0
	for _, set := range st.Sets {
		kind := "set"
		if set.Map {
			kind = "map"
		}
		more := ""
		if set.Truncated {
			more = "+"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d%s\n", set.Name, kind, set.Elements, more)
		total += set.Elements
	}
	fmt.Fprintf(tw, "  (%d sets)\t\t%d\n", len(st.Sets), total)
	tw.Flush()

	b := st.Blocked
	fmt.Fprintf(w, "\nBlocked lookups in the last %s: %d", since, b.Count)
	if b.Truncated {
		fmt.Fprintf(w, " (at least; the agent's ring of recent lookups wrapped)")
	}
	fmt.Fprintf(w, " (%d since start)\n", b.Total)
	tops := func(title string, cs []statusapi.Counted) {
		if len(cs) == 0 {
			return
		}
		fmt.Fprintf(w, "  top %s:\n", title)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range cs {
			fmt.Fprintf(tw, "    %s\t%d\n", c.Key, c.Count)
		}
		tw.Flush()
	}
	tops("names", b.TopNames)
	tops("workloads", b.TopWorkloads)

	if len(st.Resolver) > 0 {
		fmt.Fprintf(w, "\nResolver:\n")
		keys := make([]string, 0, len(st.Resolver))
		for k := range st.Resolver {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t%d\n", k, st.Resolver[k])
		}
		tw.Flush()
	}
}
