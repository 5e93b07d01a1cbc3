package preresolve

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// fakeSets records the ops it is given.
type fakeSets struct {
	mu  sync.Mutex
	ops []ipset.Op
	got chan struct{}
}

func (f *fakeSets) Apply(_ context.Context, ops ...ipset.Op) error {
	f.mu.Lock()
	f.ops = append(f.ops, ops...)
	f.mu.Unlock()
	if f.got != nil {
		select {
		case f.got <- struct{}{}:
		default:
		}
	}
	return nil
}

func (f *fakeSets) take() []ipset.Op {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// opText renders ops as "add set addr/timeout ...", sorted.
func opText(ops []ipset.Op) []string {
	var out []string
	for _, op := range ops {
		kind := map[ipset.OpKind]string{ipset.OpAdd: "add", ipset.OpDelete: "del"}[op.Kind]
		for _, e := range op.Elements {
			s := fmt.Sprintf("%s %s %s", kind, op.Set, e.Prefix.Addr())
			if op.Kind == ipset.OpAdd {
				s += " " + e.Timeout.String()
			}
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// zone answers like an authoritative server: name → records.
type zone map[string][]string

func (z zone) exchange(t *testing.T, asked *[]string, mu *sync.Mutex) func(context.Context, *dns.Msg, string) (*dns.Msg, error) {
	return func(_ context.Context, m *dns.Msg, up string) (*dns.Msg, error) {
		q := m.Question[0]
		mu.Lock()
		*asked = append(*asked, up+" "+strings.TrimSuffix(q.Name, ".")+" "+dns.TypeToString[q.Qtype])
		mu.Unlock()
		if up == "down:53" {
			return nil, fmt.Errorf("i/o timeout")
		}
		r := new(dns.Msg)
		r.SetReply(m)
		recs, ok := z[strings.TrimSuffix(q.Name, ".")]
		if !ok {
			r.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR(". 30 IN SOA ns.test. admin.test. 1 7200 3600 1209600 30")
			r.Ns = []dns.RR{soa}
			return r, nil
		}
		for _, s := range recs {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				r.Answer = append(r.Answer, rr)
			}
		}
		return r, nil
	}
}

func planOf(t *testing.T, rules ...string) *policy.Plan {
	t.Helper()
	var docs []string
	for i, r := range rules {
		docs = append(docs, fmt.Sprintf(`apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: p%d}
spec: {tier: Admin, priority: %d, subject: {namespaceSelector: {}}, egress: [%s]}
`, i, 10*(i+1), r))
	}
	objs, err := manifest.Decode("test", strings.NewReader(strings.Join(docs, "---\n")))
	if err != nil {
		t.Fatal(err)
	}
	st, err := manifest.LoadStore(objs, &policy.Workloads{})
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := policy.NewCompiler(st, policy.Options{}).Compile()
	return plan
}

func ruleID(policyName string) string {
	return policy.RuleID(policy.RuleRef{Policy: policy.PolicyRef{Kind: policy.KindClusterFirewallPolicy, Name: policyName}, Rule: "egress[0]"})
}

type harness struct {
	r      *Resolver
	sets   *fakeSets
	asked  []string
	mu     sync.Mutex
	now    time.Time
	record map[string][]netip.Addr
	forgot []string
}

func newHarness(t *testing.T, cfg Config, z zone) *harness {
	t.Helper()
	h := &harness{sets: &fakeSets{}, now: time.Unix(1_000_000, 0), record: map[string][]netip.Addr{}}
	if cfg.Upstreams == nil {
		cfg.Upstreams = []string{"up:53"}
	}
	r, err := New(cfg, Deps{
		Sets: h.sets, SetName: func(id string, f ipset.Family) string { return fmt.Sprintf("fqd_%s_%v", id, f) },
		Record:   func(name string, _ time.Time, ips ...netip.Addr) { h.record[name] = append(h.record[name], ips...) },
		Forget:   func(names ...string) { h.forgot = append(h.forgot, names...) },
		Exchange: z.exchange(t, &h.asked, &h.mu),
		Now:      func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	return h
}

// resolveDue resolves every due name synchronously, as Run does.
func (h *harness) resolveDue() []string {
	var names []string
	for _, n := range h.r.dueOrder() {
		if e := h.r.entries[n]; !e.next.After(h.now) {
			names = append(names, n)
			h.r.finish(context.Background(), h.r.resolve(context.Background(), n))
		}
	}
	return names
}

// TestPreresolveWritesDenySets: the exact names of Deny rules (not the
// wildcard, not the Allow rule's name) are asked for A and AAAA; their
// addresses, without the excluded ones, go to the sets of every rule naming
// them with a lifetime of the TTL-driven interval plus MinInterval, and into
// the policy model.
func TestPreresolveWritesDenySets(t *testing.T) {
	h := newHarness(t, Config{MinInterval: 10 * time.Second, MaxInterval: 300 * time.Second, Exclude: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, zone{
		"pool.minepool.test": {"pool.minepool.test. 120 IN CNAME edge.cdn.test.", "edge.cdn.test. 100 IN A 192.0.2.66",
			"edge.cdn.test. 100 IN A 127.0.0.1", "edge.cdn.test. 100 IN A 10.1.2.3", "edge.cdn.test. 100 IN AAAA 2001:db8::66"},
		"short.test":    {"short.test. 1 IN A 192.0.2.7"},
		"long.test":     {"long.test. 86400 IN A 192.0.2.8"},
		"allowed.test":  {"allowed.test. 60 IN A 192.0.2.9"},
		"x.wild.test":   {"x.wild.test. 60 IN A 192.0.2.10"},
		"stranger.test": {"pool.minepool.test. 60 IN A 198.51.100.1"}, // not owned by the chain
	})
	plan := planOf(t,
		`{action: Deny, to: [{fqdn: {matchName: pool.minepool.test}}, {fqdn: {matchPattern: "*.wild.test"}}, {fqdn: {matchName: short.test}}]}`,
		`{action: Deny, to: [{fqdn: {matchName: pool.minepool.test}}, {fqdn: {matchName: long.test}}, {fqdn: {matchName: nx.test}}, {fqdn: {matchName: stranger.test}}]}`,
		`{action: Allow, to: [{fqdn: {matchName: allowed.test}}]}`,
	)
	h.r.applyPlan(context.Background(), plan)
	due := h.resolveDue()
	if want := []string{"long.test", "nx.test", "pool.minepool.test", "short.test", "stranger.test"}; !slices.Equal(due, want) {
		t.Fatalf("resolved %v, want %v", due, want)
	}
	p0, p1 := ruleID("p0"), ruleID("p1")
	got := opText(h.sets.take())
	want := []string{
		"add fqd_" + p0 + "_ipv4 192.0.2.66 1m50s", "add fqd_" + p0 + "_ipv4 192.0.2.7 20s",
		"add fqd_" + p0 + "_ipv6 2001:db8::66 1m50s",
		"add fqd_" + p1 + "_ipv4 192.0.2.66 1m50s", "add fqd_" + p1 + "_ipv4 192.0.2.8 5m10s",
		"add fqd_" + p1 + "_ipv6 2001:db8::66 1m50s",
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("set writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if fmt.Sprint(h.record["pool.minepool.test"]) != "[192.0.2.66 2001:db8::66]" {
		t.Errorf("model: %v", h.record)
	}
	s := h.r.Stats()
	// Intervals: pool 100 s, short 10 s (MinInterval), long 300 s (MaxInterval),
	// nx 30 s (SOA), stranger 10 s (no TTL: MinInterval).
	wantQPM := 2 * (60/100.0 + 60/10.0 + 60/300.0 + 60/30.0 + 60/10.0)
	if s.Names != 5 || s.Addresses != 4 || s.Queries != 10 || s.QueryErrors != 0 || s.AddrsDropped != 2 || fmt.Sprintf("%.2f", s.QueriesPerMinute) != fmt.Sprintf("%.2f", wantQPM) {
		t.Errorf("stats %+v, want 5 names, 4 addresses, 10 queries, 2 dropped, %.2f queries/min", s, wantQPM)
	}
	for _, a := range h.asked {
		if strings.Contains(a, "wild") || strings.Contains(a, "allowed") {
			t.Errorf("asked %q", a)
		}
	}
	// Due again: only short.test and stranger.test after 10 s.
	h.now = h.now.Add(10 * time.Second)
	if due := h.resolveDue(); !slices.Equal(due, []string{"short.test", "stranger.test"}) {
		t.Errorf("due after 10s: %v", due)
	}
}

// TestPreresolveBounds: MaxNames names in evaluation order (the rest
// counted), MaxAddrsPerName addresses, a failing upstream skipped for the
// next and a name no upstream answers retried after MinInterval.
func TestPreresolveBounds(t *testing.T) {
	var recs []string
	for i := range 10 {
		recs = append(recs, fmt.Sprintf("big.test. 60 IN A 192.0.2.%d", i+1))
	}
	h := newHarness(t, Config{MaxNames: 2, MaxAddrsPerName: 3, MinInterval: 5 * time.Second, Upstreams: []string{"down:53", "up:53"}}, zone{"big.test": recs, "b.test": {"b.test. 60 IN A 192.0.2.200"}})
	plan := planOf(t,
		`{action: Deny, to: [{fqdn: {matchName: big.test}}, {fqdn: {matchName: b.test}}]}`,
		`{action: Deny, to: [{fqdn: {matchName: c.test}}]}`,
	)
	h.r.applyPlan(context.Background(), plan)
	h.resolveDue()
	s := h.r.Stats()
	if s.Names != 2 || s.OverLimit != 1 || s.Addresses != 4 || s.AddrsDropped != 7 {
		t.Errorf("stats %+v, want names 2 (c.test over the limit), addresses 3+1, 7 dropped", s)
	}
	if len(h.asked) != 8 || !strings.HasPrefix(h.asked[0], "down:53 ") || !strings.HasPrefix(h.asked[1], "up:53 ") {
		t.Errorf("asked %v: want each question to the dead upstream, then the next", h.asked)
	}
	// Every upstream down: an error, retried after MinInterval; the addresses stay.
	h.r.cfg.Upstreams = []string{"down:53"}
	h.now = h.now.Add(time.Minute)
	h.resolveDue()
	if s := h.r.Stats(); s.QueryErrors != 4 || s.Addresses != 4 {
		t.Errorf("stats %+v, want 4 query errors (2 names × A, AAAA), addresses kept", s)
	}
	if e := h.r.entries["b.test"]; !e.next.Equal(h.now.Add(5 * time.Second)) {
		t.Errorf("retry at %v, want MinInterval later", e.next.Sub(h.now))
	}
}

// TestPreresolvePlanChanges: a name a second rule now names is written to
// that rule's set at once (no query); a name no rule names any more is
// forgotten and deleted from the sets of the rules that stay, except the
// addresses another name of the rule holds.
func TestPreresolvePlanChanges(t *testing.T) {
	h := newHarness(t, Config{MinInterval: 10 * time.Second}, zone{
		"a.test": {"a.test. 60 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2"},
		"b.test": {"b.test. 60 IN A 192.0.2.2"},
	})
	h.r.applyPlan(context.Background(), planOf(t, `{action: Deny, to: [{fqdn: {matchName: a.test}}, {fqdn: {matchName: b.test}}]}`))
	h.resolveDue()
	h.sets.take()
	asked := len(h.asked)
	p0, p1 := ruleID("p0"), ruleID("p1")
	h.now = h.now.Add(time.Second)
	h.r.applyPlan(context.Background(), planOf(t,
		`{action: Deny, to: [{fqdn: {matchName: b.test}}]}`,
		`{action: Deny, to: [{fqdn: {matchName: a.test}}]}`))
	got := opText(h.sets.take())
	want := []string{"add fqd_" + p1 + "_ipv4 192.0.2.1 1m9s", "add fqd_" + p1 + "_ipv4 192.0.2.2 1m9s", "del fqd_" + p0 + "_ipv4 192.0.2.1"}
	if !slices.Equal(got, want) {
		t.Errorf("ops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(h.asked) != asked {
		t.Errorf("asked again: %v", h.asked[asked:])
	}
	h.r.applyPlan(context.Background(), planOf(t, `{action: Deny, to: [{fqdn: {matchName: b.test}}]}`))
	if !slices.Equal(h.forgot, []string{"a.test"}) {
		t.Errorf("forgotten %v, want [a.test]", h.forgot)
	}
}

// TestRun: the loop resolves the names of the plan it is given and writes
// them (what the agent runs).
func TestRun(t *testing.T) {
	h := newHarness(t, Config{}, zone{"a.test": {"a.test. 60 IN A 192.0.2.1"}})
	h.r.deps.Now = time.Now
	h.sets.got = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.r.Run(ctx) }()
	h.r.SetPlan(planOf(t, `{action: Deny, to: [{fqdn: {matchName: a.test}}]}`))
	<-h.sets.got
	cancel()
	<-done
	if got := opText(h.sets.take()); len(got) != 1 || !strings.HasPrefix(got[0], "add fqd_"+ruleID("p0")+"_ipv4 192.0.2.1 ") {
		t.Errorf("ops %v", got)
	}
}

// TestPreresolveRevokesNewAddresses: addresses new to the sets are handed to
// Deps.Revoke (the flows pods opened to them before go), together and at
// most once per revokeEvery; a refresh that brings no new address revokes
// nothing.
func TestPreresolveRevokesNewAddresses(t *testing.T) {
	h := newHarness(t, Config{MinInterval: 10 * time.Second}, zone{
		"a.test": {"a.test. 60 IN A 192.0.2.1", "a.test. 60 IN AAAA 2001:db8::1"},
		"b.test": {"b.test. 60 IN A 192.0.2.2"},
	})
	var revoked [][]netip.Addr
	h.r.deps.Revoke = func(a []netip.Addr) { revoked = append(revoked, a) }
	h.r.applyPlan(context.Background(), planOf(t, `{action: Deny, to: [{fqdn: {matchName: a.test}}, {fqdn: {matchName: b.test}}]}`))
	h.resolveDue()
	if len(h.r.revoke) != 3 {
		t.Fatalf("pending %v, want the 3 new addresses", h.r.revoke)
	}
	h.r.flushRevoke(h.now)
	if fmt.Sprint(revoked) != "[[192.0.2.1 192.0.2.2 2001:db8::1]]" || !h.r.revokeAt.Equal(h.now.Add(revokeEvery)) {
		t.Errorf("revoked %v, next at %v", revoked, h.r.revokeAt.Sub(h.now))
	}
	h.now = h.now.Add(time.Minute)
	h.resolveDue()
	if len(h.r.revoke) != 0 {
		t.Errorf("a refresh with the same addresses left %v to revoke", h.r.revoke)
	}
}
