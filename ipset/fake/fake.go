// Package fake is an in-memory ipset.Manager for unit tests of the packages that
// write kernel sets (dnsproxy, egress). It passes the same conformance suite as the
// kernel backends (ipset/ipsettest): the same validation, errors (*ipset.Error
// wrapping ipset.ErrNotExist, ErrFamily, ErrInvalid, ErrMismatch), timeout refresh
// on re-add, and the same range semantics for KindPrefix sets (merged overlaps,
// except-style deletes). Time comes from a clock the test controls, so timeouts
// are testable without sleeping:
//
//	clock := fake.NewClock(time.Unix(0, 0))
//	m := fake.New(fake.WithClock(clock.Now))
//	...
//	clock.Advance(31 * time.Second) // elements with a 30s timeout are gone
//
// Apply is atomic (all operations or none), like the nftables backend.
package fake

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/internal/iprange"
)

// Clock is a manual clock for WithClock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that stands at start until advanced.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Option configures New.
type Option func(*Manager)

// WithClock sets the clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(m *Manager) { m.now = now } }

// Manager is the in-memory ipset.Manager. Managers from Reopen share the sets.
type Manager struct {
	now func() time.Time
	st  *state
}

type state struct {
	mu   sync.Mutex
	sets map[string]*set
	fail func(op string, set string) error
	hits map[string]int
}

type item struct {
	e   ipset.Element // without timeout
	exp time.Time     // zero: none
}

type set struct {
	spec   ipset.Spec
	items  map[string]item // KindAddr, KindAddrPair
	ranges *iprange.Set    // KindPrefix
}

var _ ipset.Manager = (*Manager)(nil)

// New returns an empty Manager.
func New(opts ...Option) *Manager {
	m := &Manager{now: time.Now, st: &state{sets: map[string]*set{}, hits: map[string]int{}}}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Reopen returns a second Manager on the same sets (as after an agent restart).
func (m *Manager) Reopen(opts ...Option) *Manager {
	m2 := &Manager{now: m.now, st: m.st}
	for _, o := range opts {
		o(m2)
	}
	return m2
}

// FailWith makes every later call of op ("ensure", "apply", "replace", "list",
// "destroy") on set (empty: any set) fail with an *ipset.Error wrapping the
// error f returns, when f returns one; nil removes the hook. Nothing is changed
// by a call that fails this way.
func (m *Manager) FailWith(f func(op, set string) error) {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	m.st.fail = f
}

// Calls returns how many calls of op ("apply", ...) were made.
func (m *Manager) Calls(op string) int {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	return m.st.hits[op]
}

// Specs returns the specs of the sets that exist.
func (m *Manager) Specs() []ipset.Spec {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	var out []ipset.Spec
	for _, s := range m.st.sets {
		out = append(out, s.spec)
	}
	return out
}

// Contains reports whether a packet with source src and destination dst would
// match the set now: KindAddr and KindPrefix sets match dst, KindAddrPair sets
// (src, dst). An unknown set matches nothing.
func (m *Manager) Contains(set string, src, dst netip.Addr) bool {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	s := m.st.sets[set]
	if s == nil {
		return false
	}
	now := m.now()
	s.expire(now)
	e := ipset.Element{Prefix: netip.PrefixFrom(dst, dst.BitLen())}
	if s.spec.Kind == ipset.KindAddrPair {
		e.Src = src
	}
	n, err := s.spec.Normalize(e)
	if err != nil {
		return false
	}
	if s.spec.Kind == ipset.KindPrefix {
		for _, r := range s.ranges.Ranges() {
			if r.Start.Compare(n.Prefix.Addr()) <= 0 && n.Prefix.Addr().Compare(r.End) <= 0 {
				return true
			}
		}
		return false
	}
	_, ok := s.items[n.Key()]
	return ok
}

func (st *state) check(op string, sets ...string) error {
	if st.fail == nil {
		return nil
	}
	for _, name := range sets {
		if err := st.fail(op, name); err != nil {
			return &ipset.Error{Op: op, Set: name, Err: err}
		}
	}
	return nil
}

func (s *set) expire(now time.Time) {
	if s.ranges != nil {
		s.ranges.Expire(now)
		return
	}
	for k, it := range s.items {
		if !it.exp.IsZero() && !it.exp.After(now) {
			delete(s.items, k)
		}
	}
}

func (s *set) clone() *set {
	c := &set{spec: s.spec}
	if s.ranges != nil {
		c.ranges = iprange.FromRanges(s.ranges.Ranges())
	} else {
		c.items = maps.Clone(s.items)
	}
	return c
}

func newSet(spec ipset.Spec) *set {
	s := &set{spec: spec}
	if spec.Kind == ipset.KindPrefix {
		s.ranges = &iprange.Set{}
	} else {
		s.items = map[string]item{}
	}
	return s
}

func expiry(now time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return now.Add(d)
}

func (s *set) add(e ipset.Element, now time.Time) {
	exp := expiry(now, e.Timeout)
	if s.ranges != nil {
		s.ranges.Add(e.Prefix, exp)
		return
	}
	e.Timeout = 0
	s.items[e.Key()] = item{e, exp}
}

func (s *set) del(e ipset.Element) {
	if s.ranges != nil {
		s.ranges.Delete(e.Prefix)
		return
	}
	delete(s.items, e.Key())
}

func (s *set) flush() {
	if s.ranges != nil {
		s.ranges.Clear()
		return
	}
	clear(s.items)
}

// Ensure implements ipset.Manager.
func (m *Manager) Ensure(ctx context.Context, specs ...ipset.Spec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := map[string]ipset.Spec{}
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: err}
		}
		if old, ok := want[s.Name]; ok && old != s {
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: fmt.Errorf("%w: defined twice", ipset.ErrInvalid)}
		}
		want[s.Name] = s
	}
	st := m.st
	st.mu.Lock()
	defer st.mu.Unlock()
	st.hits["ensure"]++
	if err := st.check("ensure", names(specs)...); err != nil {
		return err
	}
	for _, s := range specs {
		if got, ok := st.sets[s.Name]; ok && got.spec != s {
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: fmt.Errorf("%w: want %+v, have %+v", ipset.ErrMismatch, s, got.spec)}
		}
	}
	for _, s := range specs {
		if _, ok := st.sets[s.Name]; !ok {
			st.sets[s.Name] = newSet(s)
		}
	}
	return nil
}

func names(specs []ipset.Spec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	return out
}

// Apply implements ipset.Manager, atomically.
func (m *Manager) Apply(ctx context.Context, ops ...ipset.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st := m.st
	st.mu.Lock()
	defer st.mu.Unlock()
	st.hits["apply"]++
	now := m.now()
	work := map[string]*set{}
	for _, op := range ops {
		if err := st.check("apply", op.Set); err != nil {
			return err
		}
		s := work[op.Set]
		if s == nil {
			orig, ok := st.sets[op.Set]
			if !ok {
				return &ipset.Error{Op: "apply", Set: op.Set, Err: ipset.ErrNotExist}
			}
			s = orig.clone()
			s.expire(now)
			work[op.Set] = s
		}
		switch op.Kind {
		case ipset.OpAdd, ipset.OpDelete:
			for _, e := range op.Elements {
				n, err := s.spec.Normalize(e)
				if err != nil {
					return &ipset.Error{Op: "apply", Set: op.Set, Element: e.String(), Err: err}
				}
				if op.Kind == ipset.OpAdd {
					s.add(n, now)
				} else {
					s.del(n)
				}
			}
		case ipset.OpFlush:
			s.flush()
		default:
			return &ipset.Error{Op: "apply", Set: op.Set, Err: fmt.Errorf("%w op kind %d", ipset.ErrInvalid, op.Kind)}
		}
	}
	maps.Copy(st.sets, work)
	return nil
}

// Replace implements ipset.Manager, atomically.
func (m *Manager) Replace(ctx context.Context, name string, elems []ipset.Element) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st := m.st
	st.mu.Lock()
	defer st.mu.Unlock()
	st.hits["replace"]++
	if err := st.check("replace", name); err != nil {
		return err
	}
	orig, ok := st.sets[name]
	if !ok {
		return &ipset.Error{Op: "replace", Set: name, Err: ipset.ErrNotExist}
	}
	s := newSet(orig.spec)
	now := m.now()
	for _, e := range elems {
		n, err := s.spec.Normalize(e)
		if err != nil {
			return &ipset.Error{Op: "replace", Set: name, Element: e.String(), Err: err}
		}
		s.add(n, now)
	}
	st.sets[name] = s
	return nil
}

// List implements ipset.Manager; Element.Timeout is the remaining time.
func (m *Manager) List(ctx context.Context, name string) ([]ipset.Element, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st := m.st
	st.mu.Lock()
	defer st.mu.Unlock()
	st.hits["list"]++
	if err := st.check("list", name); err != nil {
		return nil, err
	}
	s, ok := st.sets[name]
	if !ok {
		return nil, &ipset.Error{Op: "list", Set: name, Err: ipset.ErrNotExist}
	}
	now := m.now()
	s.expire(now)
	var out []ipset.Element
	remaining := func(exp time.Time) time.Duration {
		if exp.IsZero() {
			return 0
		}
		return exp.Sub(now)
	}
	if s.ranges != nil {
		for _, p := range s.ranges.Prefixes() {
			out = append(out, ipset.Element{Prefix: p.Prefix, Timeout: remaining(p.Expiry)})
		}
		return out, nil
	}
	for _, it := range s.items {
		e := it.e
		e.Timeout = remaining(it.exp)
		out = append(out, e)
	}
	ipset.SortElements(out)
	return out, nil
}

// Destroy implements ipset.Manager; absent sets are not an error.
func (m *Manager) Destroy(ctx context.Context, sets ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st := m.st
	st.mu.Lock()
	defer st.mu.Unlock()
	st.hits["destroy"]++
	if err := st.check("destroy", sets...); err != nil {
		return err
	}
	for _, name := range sets {
		delete(st.sets, name)
	}
	return nil
}
