// Package preresolve resolves the exact names of Deny rules on a schedule and
// writes their addresses to the rules' kernel sets (egress.DenySetName), so
// that a Deny rule also drops connections to those addresses from pods that
// never looked the name up: an address hard-coded in the pod, cached from an
// earlier answer or learned through a side channel (issue 16, item 4).
//
// Only exact names can be pre-resolved (policy.PlanRule.DenyNames): a
// wildcard such as "*.minepool.com" names no finite set of names. For those,
// feed the addresses into a CIDR rule instead (a named set, docs/policy.md).
//
// The work is bounded: at most Config.MaxNames names (the first ones in the
// order the tiers evaluate them: Admin, then namespaced, then Baseline, each
// by priority and reference), each asked for A and AAAA through the agent's
// own upstream resolvers no more often than Config.MinInterval and at least
// every Config.MaxInterval, following the answers' TTLs in between, with at
// most Config.Workers queries in flight and Config.MaxAddrsPerName addresses
// kept per name. A set element lives for the name's refresh interval plus
// MinInterval, so one failed refresh does not open the rule; when the
// upstream stays unreachable longer, the elements expire (the rule then
// covers only the pods that look the name up, as without pre-resolution).
package preresolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// Defaults of Config.
const (
	DefaultMaxNames        = 1000
	DefaultMinInterval     = time.Minute
	DefaultMaxInterval     = time.Hour
	DefaultTimeout         = 2 * time.Second
	DefaultWorkers         = 4
	DefaultMaxAddrsPerName = 64
)

// Config bounds the pre-resolver.
type Config struct {
	// Upstreams are the resolvers asked ("host:port"), in order: the next is
	// tried when one does not answer.
	Upstreams []string
	// MaxNames bounds the names resolved (DefaultMaxNames when 0; a negative
	// value is invalid: turn the pre-resolver off by not running it).
	MaxNames int
	// MinInterval is the shortest time between two resolutions of a name,
	// whatever its TTL (DefaultMinInterval when 0, at least one second).
	MinInterval time.Duration
	// MaxInterval is the longest (DefaultMaxInterval when 0).
	MaxInterval time.Duration
	// Timeout bounds one query to one upstream (DefaultTimeout when 0).
	Timeout time.Duration
	// Workers bounds the queries in flight (DefaultWorkers when 0).
	Workers int
	// MaxAddrsPerName bounds the addresses kept per name
	// (DefaultMaxAddrsPerName when 0); the rest of an answer is dropped.
	MaxAddrsPerName int
	// Exclude are addresses never written to a deny set besides the built-in
	// ones (unspecified, loopback, link-local, multicast): the node's own
	// addresses and the cluster's ranges, which a name's owner could
	// otherwise make the rule drop.
	Exclude []netip.Prefix
}

func (c Config) withDefaults() Config {
	if c.MaxNames == 0 {
		c.MaxNames = DefaultMaxNames
	}
	if c.MinInterval == 0 {
		c.MinInterval = DefaultMinInterval
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = DefaultMaxInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.MaxAddrsPerName == 0 {
		c.MaxAddrsPerName = DefaultMaxAddrsPerName
	}
	return c
}

// Validate checks a configuration (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if len(c.Upstreams) == 0 {
		errs = append(errs, errors.New("no upstream resolver"))
	}
	if c.MaxNames < 0 {
		errs = append(errs, fmt.Errorf("max names %d: want a positive number", c.MaxNames))
	}
	if c.MinInterval < time.Second {
		errs = append(errs, fmt.Errorf("min interval %v: want at least 1s", c.MinInterval))
	}
	if c.MaxInterval < c.MinInterval {
		errs = append(errs, fmt.Errorf("max interval %v is shorter than the min interval %v", c.MaxInterval, c.MinInterval))
	}
	if c.Timeout < 0 || c.Workers < 0 || c.MaxAddrsPerName < 0 {
		errs = append(errs, errors.New("timeout, workers and addresses per name must not be negative"))
	}
	return errors.Join(errs...)
}

// Sets writes set elements (ipset.Manager's Apply).
type Sets interface {
	Apply(ctx context.Context, ops ...ipset.Op) error
}

// Deps are the pre-resolver's collaborators.
type Deps struct {
	// Sets receives the addresses; SetName names a rule's set for a family
	// (egress.DenySetName).
	Sets    Sets
	SetName func(ruleID string, family ipset.Family) string
	// Record and Forget keep the policy model in line with the kernel
	// (policy.Store.RecordDenyResolved, ForgetDenyResolved); optional.
	Record func(name string, until time.Time, ips ...netip.Addr)
	Forget func(names ...string)
	// Revoke ends the flows pods opened to addresses before they entered a
	// deny set (egress.Enforcer.RevokeTo); optional. It is called with the
	// addresses new to the sets, at most once per revokeEvery.
	Revoke func(addrs []netip.Addr)
	// Exchange sends one query to one upstream (default: UDP with EDNS0,
	// retried over TCP when truncated).
	Exchange func(ctx context.Context, m *dns.Msg, upstream string) (*dns.Msg, error)
	// Log receives the warnings (default: discard).
	Log *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Stats are the pre-resolver's counters and gauges.
type Stats struct {
	// Names is how many names are pre-resolved; OverLimit how many exact
	// Deny names are not (beyond MaxNames).
	Names, OverLimit int
	// Addresses are the addresses held for the names (both families).
	Addresses int
	// QueriesPerMinute is the schedule's cost: the queries a minute the
	// current intervals make (two per name and interval).
	QueriesPerMinute float64
	// Queries counts the queries sent, QueryErrors those that got no usable
	// answer from any upstream, SetErrors the failed set writes, Elements the
	// elements written (refreshes included), AddrsDropped the addresses left
	// out (excluded ranges, beyond MaxAddrsPerName).
	Queries, QueryErrors, SetErrors, Elements, AddrsDropped uint64
}

// entry is one pre-resolved name.
type entry struct {
	name     string
	rules    []string // IDs of the rules whose sets get the addresses
	next     time.Time
	interval time.Duration
	addrs    map[netip.Addr]time.Time // address → end of its set element
	inflight bool
}

// result is a finished resolution.
type result struct {
	name  string
	addrs []netip.Addr
	ttl   uint32
	err   error
}

// Resolver is the pre-resolver; give it plans with SetPlan and run it with
// Run.
type Resolver struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	planMu  sync.Mutex
	plan    *policy.Plan
	planSig chan struct{}

	entries map[string]*entry // owned by Run's goroutine
	results chan result
	// revoke are the addresses new to the sets since the last Deps.Revoke,
	// due at revokeAt (owned by Run's goroutine).
	revoke   map[netip.Addr]bool
	revokeAt time.Time

	names, overLimit, addresses atomic.Int64
	qpm                         atomic.Uint64 // float64 bits
	queries, queryErrors        atomic.Uint64
	setErrors, elements         atomic.Uint64
	addrsDropped                atomic.Uint64
}

// New returns a pre-resolver.
func New(cfg Config, deps Deps) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("preresolve: %w", err)
	}
	if deps.Sets != nil && deps.SetName == nil {
		return nil, errors.New("preresolve: Deps.SetName is required with Deps.Sets")
	}
	cfg = cfg.withDefaults()
	if deps.Exchange == nil {
		deps.Exchange = exchange(cfg.Timeout)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Resolver{cfg: cfg, deps: deps, log: log, planSig: make(chan struct{}, 1),
		entries: map[string]*entry{}, results: make(chan result, cfg.Workers), revoke: map[netip.Addr]bool{}}, nil
}

// SetPlan hands the resolver the plan the kernel now enforces (it never
// blocks: the Enforcer calls it after each Apply).
func (r *Resolver) SetPlan(plan *policy.Plan) {
	r.planMu.Lock()
	r.plan = plan
	r.planMu.Unlock()
	select {
	case r.planSig <- struct{}{}:
	default:
	}
}

// Stats returns the counters and gauges.
func (r *Resolver) Stats() Stats {
	return Stats{
		Names: int(r.names.Load()), OverLimit: int(r.overLimit.Load()), Addresses: int(r.addresses.Load()),
		QueriesPerMinute: float64frombits(r.qpm.Load()),
		Queries:          r.queries.Load(), QueryErrors: r.queryErrors.Load(), SetErrors: r.setErrors.Load(),
		Elements: r.elements.Load(), AddrsDropped: r.addrsDropped.Load(),
	}
}

// Run resolves until ctx ends.
func (r *Resolver) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	inflight := 0
	for {
		now := r.deps.Now()
		var earliest time.Time
		for _, name := range r.dueOrder() {
			e := r.entries[name]
			if e.inflight {
				continue
			}
			if e.next.After(now) {
				if earliest.IsZero() || e.next.Before(earliest) {
					earliest = e.next
				}
				continue
			}
			if inflight >= r.cfg.Workers {
				earliest = now
				break
			}
			e.inflight = true
			inflight++
			go func(name string) { r.results <- r.resolve(ctx, name) }(name)
		}
		if len(r.revoke) > 0 {
			if !now.Before(r.revokeAt) {
				r.flushRevoke(now)
			} else if earliest.IsZero() || r.revokeAt.Before(earliest) {
				earliest = r.revokeAt
			}
		}
		wait := time.Hour
		if !earliest.IsZero() {
			wait = max(earliest.Sub(now), 10*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			for ; inflight > 0; inflight-- {
				<-r.results
			}
			return
		case <-r.planSig:
			r.planMu.Lock()
			plan := r.plan
			r.planMu.Unlock()
			r.applyPlan(ctx, plan)
		case res := <-r.results:
			inflight--
			r.finish(ctx, res)
		case <-timer.C:
		}
	}
}

// dueOrder returns the entries' names sorted by next resolution.
func (r *Resolver) dueOrder() []string {
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := r.entries[names[i]], r.entries[names[j]]
		if !a.next.Equal(b.next) {
			return a.next.Before(b.next)
		}
		return names[i] < names[j]
	})
	return names
}

// Targets returns the names to pre-resolve in plan with the IDs of the rules
// naming them (at most maxNames names, chosen in evaluation order), and how
// many more exact Deny names the plan holds.
func Targets(plan *policy.Plan, maxNames int) (map[string][]string, int) {
	if plan == nil {
		return nil, 0
	}
	pols := make([]*policy.PlanPolicy, 0, len(plan.Policies))
	for _, pp := range plan.Policies {
		pols = append(pols, pp)
	}
	rank := map[policy.Tier]int{policy.TierAdmin: 0, policy.TierNamespaced: 1, policy.TierBaseline: 2}
	sort.Slice(pols, func(i, j int) bool {
		a, b := pols[i], pols[j]
		if rank[a.Tier] != rank[b.Tier] {
			return rank[a.Tier] < rank[b.Tier]
		}
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		return a.Ref.String() < b.Ref.String()
	})
	out := map[string][]string{}
	over := map[string]bool{}
	for _, pp := range pols {
		for _, rule := range pp.Egress {
			for _, n := range rule.DenyNames() {
				switch {
				case out[n] != nil:
					if !slices.Contains(out[n], rule.ID) {
						out[n] = append(out[n], rule.ID)
					}
				case len(out) < maxNames:
					out[n] = []string{rule.ID}
				default:
					over[n] = true
				}
			}
		}
	}
	return out, len(over)
}

// applyPlan brings the entries in line with plan: new names are due now, a
// known name's addresses are written at once to the sets of rules that now
// name it, and the names no rule names any more are dropped (their
// addresses deleted from the sets of rules that stay).
func (r *Resolver) applyPlan(ctx context.Context, plan *policy.Plan) {
	targets, over := Targets(plan, r.cfg.MaxNames)
	if over > 0 && int64(over) != r.overLimit.Load() {
		r.log.Warn("more exact Deny names than --deny-preresolve-max-names: the rest are not pre-resolved (a pod that connects by address reaches them)",
			"max", r.cfg.MaxNames, "not-pre-resolved", over)
	}
	r.overLimit.Store(int64(over))
	now := r.deps.Now()
	var forgotten []string
	var ops []ipset.Op
	for name, e := range r.entries {
		rules, ok := targets[name]
		if !ok {
			delete(r.entries, name)
			forgotten = append(forgotten, name)
			ops = append(ops, r.elemOps(ipset.OpDelete, e.rules, e.addrs, now)...)
			continue
		}
		var added, gone []string
		for _, id := range rules {
			if !slices.Contains(e.rules, id) {
				added = append(added, id)
			}
		}
		for _, id := range e.rules {
			if !slices.Contains(rules, id) {
				gone = append(gone, id)
			}
		}
		e.rules = rules
		ops = append(ops, r.elemOps(ipset.OpAdd, added, e.addrs, now)...)
		ops = append(ops, r.elemOps(ipset.OpDelete, gone, e.addrs, now)...)
	}
	for name, rules := range targets {
		if r.entries[name] == nil {
			r.entries[name] = &entry{name: name, rules: rules, next: now, addrs: map[netip.Addr]time.Time{}}
		}
	}
	// A deletion must not remove an address another name of the same rule
	// holds: such deletions are dropped.
	ops = r.keepShared(ops)
	r.write(ctx, ops)
	if len(forgotten) > 0 && r.deps.Forget != nil {
		r.deps.Forget(forgotten...)
	}
	r.updateGauges()
}

// keepShared removes from delete ops the elements another entry still holds
// for the same rule.
func (r *Resolver) keepShared(ops []ipset.Op) []ipset.Op {
	held := map[string]map[netip.Addr]bool{} // set name → addresses held
	for _, e := range r.entries {
		for _, id := range e.rules {
			for a := range e.addrs {
				name := r.setName(id, a)
				if held[name] == nil {
					held[name] = map[netip.Addr]bool{}
				}
				held[name][a] = true
			}
		}
	}
	out := ops[:0]
	for _, op := range ops {
		if op.Kind == ipset.OpDelete {
			kept := op.Elements[:0]
			for _, el := range op.Elements {
				if !held[op.Set][el.Prefix.Addr()] {
					kept = append(kept, el)
				}
			}
			if op.Elements = kept; len(kept) == 0 {
				continue
			}
		}
		out = append(out, op)
	}
	return out
}

func (r *Resolver) setName(ruleID string, a netip.Addr) string {
	if r.deps.SetName == nil {
		return ruleID
	}
	fam := ipset.IPv4
	if a.Is6() {
		fam = ipset.IPv6
	}
	return r.deps.SetName(ruleID, fam)
}

// elemOps returns the ops that add (with their remaining lifetime) or delete
// addrs in the sets of rules.
func (r *Resolver) elemOps(kind ipset.OpKind, rules []string, addrs map[netip.Addr]time.Time, now time.Time) []ipset.Op {
	if len(rules) == 0 || len(addrs) == 0 {
		return nil
	}
	bySet := map[string][]ipset.Element{}
	var order []string
	for _, id := range rules {
		for a, until := range addrs {
			left := until.Sub(now).Truncate(time.Second)
			if kind == ipset.OpAdd && left < time.Second {
				continue
			}
			name := r.setName(id, a)
			if bySet[name] == nil {
				order = append(order, name)
			}
			el := ipset.Addr(a, left)
			if kind == ipset.OpDelete {
				el.Timeout = 0
			}
			bySet[name] = append(bySet[name], el)
		}
	}
	sort.Strings(order)
	ops := make([]ipset.Op, 0, len(order))
	for _, name := range order {
		els := bySet[name]
		slices.SortFunc(els, func(a, b ipset.Element) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
		ops = append(ops, ipset.Op{Kind: kind, Set: name, Elements: els})
	}
	return ops
}

// write applies ops in one transaction; when that fails (a set deleted
// meanwhile with its rule), each op alone, so that the others land.
func (r *Resolver) write(ctx context.Context, ops []ipset.Op) {
	if r.deps.Sets == nil || len(ops) == 0 {
		return
	}
	n := 0
	for _, op := range ops {
		if op.Kind == ipset.OpAdd {
			n += len(op.Elements)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.deps.Sets.Apply(ctx, ops...); err == nil {
		r.elements.Add(uint64(n))
		return
	}
	for _, op := range ops {
		if err := r.deps.Sets.Apply(ctx, op); err != nil {
			if !errors.Is(err, ipset.ErrNotExist) {
				r.setErrors.Add(1)
				r.log.Warn("pre-resolved deny set not written", "set", op.Set, "err", err)
			}
			continue
		}
		if op.Kind == ipset.OpAdd {
			r.elements.Add(uint64(len(op.Elements)))
		}
	}
}

// resolve asks A and AAAA of name (off the Run goroutine).
func (r *Resolver) resolve(ctx context.Context, name string) result {
	res := result{name: name, ttl: ^uint32(0)}
	answered := 0
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		addrs, ttl, err := r.query(ctx, name, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		answered++
		res.addrs = append(res.addrs, addrs...)
		res.ttl = min(res.ttl, ttl)
	}
	if answered == 0 {
		res.err = errors.Join(errs...)
	}
	return res
}

// query asks one question of the upstreams in order and returns the
// addresses owned by the question's alias chain and the answer's TTL (the
// smallest of the chain's records, or the negative TTL).
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]netip.Addr, uint32, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	var lastErr error
	for _, up := range r.cfg.Upstreams {
		r.queries.Add(1)
		resp, err := r.deps.Exchange(ctx, m, up)
		switch {
		case err != nil:
			lastErr = fmt.Errorf("%s: %w", up, err)
			continue
		case resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError:
			lastErr = fmt.Errorf("%s: %s", up, dns.RcodeToString[resp.Rcode])
			continue
		}
		c := chain.Of(resp)
		ttl := ^uint32(0)
		var addrs []netip.Addr
		for _, rr := range resp.Answer {
			if !c.Owns(rr.Header().Name) {
				continue
			}
			ttl = min(ttl, rr.Header().Ttl)
			if ip, ok := chain.Addr(rr); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
		if len(addrs) == 0 { // negative: the SOA's TTL (RFC 2308), else MinInterval
			ttl = ^uint32(0)
			for _, rr := range resp.Ns {
				if soa, ok := rr.(*dns.SOA); ok {
					ttl = min(soa.Hdr.Ttl, soa.Minttl)
				}
			}
		}
		return addrs, ttl, nil
	}
	r.queryErrors.Add(1)
	return nil, 0, lastErr
}

// finish records a resolution: the addresses (bounded, without the excluded
// ranges) go to every set of the name's rules with a lifetime of the next
// interval plus MinInterval, and the name is due again after the interval.
func (r *Resolver) finish(ctx context.Context, res result) {
	e := r.entries[res.name]
	if e == nil {
		return // no rule names it any more
	}
	e.inflight = false
	now := r.deps.Now()
	if res.err != nil {
		e.next = now.Add(r.cfg.MinInterval)
		r.log.Debug("pre-resolution failed; retrying", "name", res.name, "in", r.cfg.MinInterval, "err", res.err)
		r.updateGauges()
		return
	}
	interval := r.cfg.MinInterval
	if res.ttl != ^uint32(0) {
		interval = time.Duration(res.ttl) * time.Second
	}
	interval = min(max(interval, r.cfg.MinInterval), r.cfg.MaxInterval)
	e.interval = interval
	e.next = now.Add(interval)
	until := now.Add(interval + r.cfg.MinInterval)
	held := map[netip.Addr]bool{}
	for a, t := range e.addrs {
		if !t.After(now) {
			delete(e.addrs, a)
			continue
		}
		held[a] = true
	}
	var kept []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, a := range res.addrs {
		switch {
		case seen[a]:
			continue
		case r.excluded(a) || len(kept) >= r.cfg.MaxAddrsPerName:
			r.addrsDropped.Add(1)
			continue
		}
		seen[a] = true
		kept = append(kept, a)
		e.addrs[a] = until
	}
	fresh := map[netip.Addr]time.Time{}
	for _, a := range kept {
		fresh[a] = until
	}
	if r.deps.Revoke != nil {
		for _, a := range kept {
			if !held[a] {
				r.revoke[a] = true
			}
		}
	}
	r.write(ctx, r.elemOps(ipset.OpAdd, e.rules, fresh, now))
	if r.deps.Record != nil && len(kept) > 0 {
		r.deps.Record(res.name, until, kept...)
	}
	r.updateGauges()
}

// revokeEvery bounds how often Deps.Revoke runs (each is a dump of the
// conntrack table): addresses new to the sets within it are revoked together.
const revokeEvery = 5 * time.Second

// flushRevoke hands the pending new addresses to Deps.Revoke.
func (r *Resolver) flushRevoke(now time.Time) {
	addrs := make([]netip.Addr, 0, len(r.revoke))
	for a := range r.revoke {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	clear(r.revoke)
	r.revokeAt = now.Add(revokeEvery)
	r.deps.Revoke(addrs)
}

// excluded reports addresses never written: unspecified, loopback,
// link-local, multicast and Config.Exclude.
func (r *Resolver) excluded(a netip.Addr) bool {
	if a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsMulticast() {
		return true
	}
	for _, p := range r.cfg.Exclude {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *Resolver) updateGauges() {
	addrs := 0
	qpm := 0.0
	for _, e := range r.entries {
		addrs += len(e.addrs)
		iv := e.interval
		if iv == 0 {
			iv = r.cfg.MinInterval
		}
		qpm += 2 * float64(time.Minute) / float64(iv)
	}
	r.names.Store(int64(len(r.entries)))
	r.addresses.Store(int64(addrs))
	r.qpm.Store(float64bits(qpm))
}
