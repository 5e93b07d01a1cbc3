// Package kernelipset is the ipset backend of ipset.Manager (the kernel's ip_set,
// through github.com/vishvananda/netlink), for hosts whose enforcement runs on
// iptables.
//
//   - KindAddr: hash:ip.
//   - KindPrefix: hash:net, kept equal to the same range model as the nftables
//     backend (ipset/internal/iprange): overlapping and adjacent prefixes are
//     merged, deleting a prefix out of a larger one splits it (except-style).
//     hash:net cannot hold a /0, so 0.0.0.0/0 (::/0) is stored as two /1 entries
//     and List shows it as /0 again.
//   - KindAddrPair: hash:net,net with full-length entries (the kernel has no
//     hash:ip,ip). Kernels built without CONFIG_IP_SET_HASH_NETNET cannot hold
//     pairs: Ensure then fails with an *ipset.Error wrapping ipset.ErrUnsupported.
//   - Spec.Timeout: the set is created with "timeout 0" (elements are permanent
//     unless they carry a timeout); timeouts have a resolution of one second
//     (rounded up) and are at most 4294967 s.
//
// Atomicity. ipset has no transactions: every element is one netlink request.
// Apply validates all operations first (so invalid input changes nothing), then
// runs them in order, best effort: a kernel error stops it, and what ran before
// stays. Replace is atomic: it fills a temporary set and swaps it in (IpsetSwap).
// An Apply that removes addresses from a hash:net set is done the same way, so no
// packet sees a half-updated prefix set; one that only adds uses plain adds.
//
// Timeout refresh: adds are sent without NLM_F_EXCL (ipset -exist), so adding an
// existing element replaces its timeout with the new one (0 makes it permanent).
//
// The ip_set module must be available in the kernel; New fails with
// ipset.ErrUnsupported when the ipset netlink protocol does not answer.
package kernelipset

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/internal/iprange"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// MaxNameLen is the longest set name ipset accepts.
const MaxNameLen = 31

// maxTimeout is the kernel's limit on timeouts in seconds (UINT_MAX / 1000).
const maxTimeout = 4294967

// Option configures New.
type Option func(*config)

type config struct {
	ns      netns.NsHandle
	handle  *netlink.Handle
	maxElem uint32
	now     func() time.Time
}

// WithNetNS makes the Manager work in the network namespace ns (the default is
// the namespace of the process).
func WithNetNS(ns netns.NsHandle) Option { return func(c *config) { c.ns = ns } }

// WithHandle uses h (which must have a NETLINK_NETFILTER socket) instead of a
// handle of the Manager's own.
func WithHandle(h *netlink.Handle) Option { return func(c *config) { c.handle = h } }

// WithMaxElements sets maxelem of the sets Ensure creates (default 262144).
func WithMaxElements(n uint32) Option { return func(c *config) { c.maxElem = n } }

// Manager is the ipset implementation of ipset.Manager.
type Manager struct {
	mu    sync.Mutex
	h     *netlink.Handle
	own   bool
	cfg   config
	specs map[string]ipset.Spec
}

var _ ipset.Manager = (*Manager)(nil)

// New returns a Manager and checks that the kernel speaks the ipset protocol.
func New(opts ...Option) (*Manager, error) {
	c := config{ns: netns.None(), maxElem: 1 << 18, now: time.Now}
	for _, o := range opts {
		o(&c)
	}
	m := &Manager{h: c.handle, cfg: c, specs: map[string]ipset.Spec{}}
	if m.h == nil {
		var err error
		if c.ns.IsOpen() {
			m.h, err = netlink.NewHandleAt(c.ns, unix.NETLINK_NETFILTER)
		} else {
			m.h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
		}
		if err != nil {
			return nil, fmt.Errorf("kernelipset: open netlink: %w", err)
		}
		m.own = true
	}
	if err := call(func() error { _, _, err := m.h.IpsetProtocol(); return err }); err != nil {
		m.Close()
		return nil, fmt.Errorf("kernelipset: %w: the kernel does not answer the ipset protocol (is the ip_set module available?): %w", ipset.ErrUnsupported, err)
	}
	return m, nil
}

// Close releases the Manager's own netlink handle.
func (m *Manager) Close() {
	if m.own && m.h != nil {
		m.h.Close()
	}
}

// call runs a netlink ipset request; the library panics on some non-errno errors
// (e.g. an interrupted dump), which become errors here.
func call(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("netlink ipset request failed: %v", r)
		}
	}()
	return f()
}

// TypeName returns the ipset type of spec.
func TypeName(spec ipset.Spec) string {
	switch spec.Kind {
	case ipset.KindPrefix:
		return "hash:net"
	case ipset.KindAddrPair:
		return "hash:net,net"
	}
	return "hash:ip"
}

func family(f ipset.Family) uint8 {
	if f == ipset.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func kernelErr(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w (kernel: %w)", ipset.ErrNotExist, err)
	case errors.Is(err, nl.IPSetError(nl.IPSET_ERR_FIND_TYPE)), errors.Is(err, unix.EPROTONOSUPPORT):
		return fmt.Errorf("%w (kernel: %w)", ipset.ErrUnsupported, err)
	}
	return err
}

func validate(s ipset.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if len(s.Name) > MaxNameLen {
		return fmt.Errorf("%w spec: ipset names are at most %d bytes", ipset.ErrInvalid, MaxNameLen)
	}
	return nil
}

func describe(s ipset.Spec) string {
	return fmt.Sprintf("%v %s timeout=%v", s.Family, TypeName(s), s.Timeout)
}

// lookup reads the spec of a set from the kernel (ErrNotExist when absent).
func (m *Manager) lookup(name string) (ipset.Spec, error) {
	var res *netlink.IPSetResult
	err := call(func() (err error) { res, err = m.h.IpsetList(name); return })
	if err != nil {
		return ipset.Spec{}, kernelErr(err)
	}
	spec := ipset.Spec{Name: name, Timeout: res.Timeout != nil}
	switch res.Family {
	case unix.AF_INET:
		spec.Family = ipset.IPv4
	case unix.AF_INET6:
		spec.Family = ipset.IPv6
	}
	switch res.TypeName {
	case "hash:ip":
		spec.Kind = ipset.KindAddr
	case "hash:net":
		spec.Kind = ipset.KindPrefix
	case "hash:net,net":
		spec.Kind = ipset.KindAddrPair
	}
	if spec.Family == 0 || spec.Kind == 0 {
		return spec, fmt.Errorf("%w: set %q is %s family %d, not one this package manages", ipset.ErrMismatch, name, res.TypeName, res.Family)
	}
	return spec, nil
}

func (m *Manager) spec(name string) (ipset.Spec, error) {
	if s, ok := m.specs[name]; ok {
		return s, nil
	}
	s, err := m.lookup(name)
	if err == nil {
		m.specs[name] = s
	}
	return s, err
}

func (m *Manager) create(name string, spec ipset.Spec) error {
	opts := netlink.IpsetCreateOptions{Family: family(spec.Family), MaxElements: m.cfg.maxElem}
	if spec.Timeout {
		zero := uint32(0)
		opts.Timeout = &zero
	}
	return call(func() error { return m.h.IpsetCreate(name, TypeName(spec), opts) })
}

// Ensure implements ipset.Manager. Sets are created one by one (ipset has no
// transactions); a failure leaves the sets created before it, which a retry adopts.
func (m *Manager) Ensure(ctx context.Context, specs ...ipset.Spec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := map[string]ipset.Spec{}
	for _, s := range specs {
		if err := validate(s); err != nil {
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: err}
		}
		if old, ok := want[s.Name]; ok && old != s {
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: fmt.Errorf("%w: defined twice", ipset.ErrInvalid)}
		}
		want[s.Name] = s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Check all before creating any.
	var missing []ipset.Spec
	for _, s := range specs {
		got, err := m.lookup(s.Name)
		switch {
		case errors.Is(err, ipset.ErrNotExist):
			if !slices.Contains(missing, s) {
				missing = append(missing, s)
			}
		case err != nil:
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: err}
		case got != s:
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: fmt.Errorf("%w: want %s, kernel has %s", ipset.ErrMismatch, describe(s), describe(got))}
		}
	}
	for _, s := range missing {
		if err := m.create(s.Name, s); err != nil {
			err = kernelErr(err)
			if errors.Is(err, ipset.ErrUnsupported) {
				err = fmt.Errorf("%w: this kernel has no ipset type %s (CONFIG_IP_SET_%s)", err, TypeName(s), configName(s))
			}
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: err}
		}
	}
	for _, s := range specs {
		m.specs[s.Name] = s
	}
	return nil
}

func configName(s ipset.Spec) string {
	switch s.Kind {
	case ipset.KindPrefix:
		return "HASH_NET"
	case ipset.KindAddrPair:
		return "HASH_NETNET"
	}
	return "HASH_IP"
}

func normalize(op string, spec ipset.Spec, elems []ipset.Element) ([]ipset.Element, error) {
	out := make([]ipset.Element, len(elems))
	for i, e := range elems {
		n, err := spec.Normalize(e)
		if err != nil {
			return nil, &ipset.Error{Op: op, Set: spec.Name, Element: e.String(), Err: err}
		}
		out[i] = n
	}
	return out, nil
}

func seconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	s := (d + time.Second - 1) / time.Second
	return uint32(min(s, maxTimeout))
}

func ip(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// entry encodes an element; timeout is seconds (0: permanent) for timeout sets.
func entry(spec ipset.Spec, e ipset.Element, timeout uint32) *netlink.IPSetEntry {
	en := &netlink.IPSetEntry{IP: ip(e.Prefix.Addr()), Replace: true}
	switch spec.Kind {
	case ipset.KindPrefix:
		en.CIDR = uint8(e.Prefix.Bits())
	case ipset.KindAddrPair:
		en.IP, en.CIDR = ip(e.Src), uint8(e.Src.BitLen())
		en.IP2, en.CIDR2 = ip(e.Prefix.Addr()), uint8(e.Prefix.Addr().BitLen())
	}
	if spec.Timeout {
		en.Timeout = &timeout
	}
	return en
}

func fromEntry(spec ipset.Spec, en netlink.IPSetEntry) (ipset.Element, bool) {
	a, ok := netip.AddrFromSlice(en.IP)
	if !ok {
		return ipset.Element{}, false
	}
	a = a.Unmap()
	if spec.Family == ipset.IPv6 {
		a = netip.AddrFrom16(a.As16())
	}
	var e ipset.Element
	switch spec.Kind {
	case ipset.KindAddr:
		e = ipset.Addr(a, 0)
	case ipset.KindPrefix:
		bits := int(en.CIDR)
		if bits == 0 {
			bits = a.BitLen()
		}
		e = ipset.Element{Prefix: netip.PrefixFrom(a, bits)}
	case ipset.KindAddrPair:
		b, ok := netip.AddrFromSlice(en.IP2)
		if !ok {
			return e, false
		}
		b = b.Unmap()
		if spec.Family == ipset.IPv6 {
			b = netip.AddrFrom16(b.As16())
		}
		e = ipset.Pair(a, b, 0)
	}
	if en.Timeout != nil {
		e.Timeout = time.Duration(*en.Timeout) * time.Second
	}
	return e, true
}

// entries lists the elements of a set as the kernel has them.
func (m *Manager) entries(spec ipset.Spec) ([]ipset.Element, error) {
	var res *netlink.IPSetResult
	if err := call(func() (err error) { res, err = m.h.IpsetList(spec.Name); return }); err != nil {
		return nil, kernelErr(err)
	}
	out := make([]ipset.Element, 0, len(res.Entries))
	for _, en := range res.Entries {
		if e, ok := fromEntry(spec, en); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// cidrs stores a model as hash:net entries (a /0 as two /1).
type cidr struct {
	p   netip.Prefix
	exp time.Time
}

func cidrs(s *iprange.Set) []cidr {
	var out []cidr
	for _, p := range s.Prefixes() {
		if p.Prefix.Bits() == 0 {
			lo := netip.PrefixFrom(p.Prefix.Addr(), 1)
			_, last := iprange.Bounds(lo)
			hi := netip.PrefixFrom(last.Next(), 1)
			out = append(out, cidr{lo, p.Expiry}, cidr{hi, p.Expiry})
			continue
		}
		out = append(out, cidr{p.Prefix, p.Expiry})
	}
	return out
}

func (m *Manager) model(spec ipset.Spec, now time.Time) (*iprange.Set, []cidr, error) {
	es, err := m.entries(spec)
	if err != nil {
		return nil, nil, err
	}
	var s iprange.Set
	old := make([]cidr, len(es))
	for i, e := range es {
		exp := time.Time{}
		if e.Timeout > 0 {
			exp = now.Add(e.Timeout)
		}
		s.Add(e.Prefix, exp)
		old[i] = cidr{e.Prefix, exp}
	}
	return &s, old, nil
}

func timeoutAt(exp, now time.Time) (uint32, bool) {
	if exp.IsZero() {
		return 0, true
	}
	d := exp.Sub(now)
	if d <= 0 {
		return 0, false
	}
	return seconds(d), true
}

// Apply implements ipset.Manager: validated as a whole, then run in order, best
// effort (see the package documentation).
func (m *Manager) Apply(ctx context.Context, ops ...ipset.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	specs := make([]ipset.Spec, len(ops))
	norm := make([][]ipset.Element, len(ops))
	for i, op := range ops {
		s, err := m.spec(op.Set)
		if err != nil {
			return &ipset.Error{Op: "apply", Set: op.Set, Err: err}
		}
		specs[i] = s
		switch op.Kind {
		case ipset.OpAdd, ipset.OpDelete:
			if norm[i], err = normalize("apply", s, op.Elements); err != nil {
				return err
			}
		case ipset.OpFlush:
		default:
			return &ipset.Error{Op: "apply", Set: op.Set, Err: fmt.Errorf("%w op kind %d", ipset.ErrInvalid, op.Kind)}
		}
	}
	now := m.cfg.now()
	type prefixSet struct {
		spec  ipset.Spec
		model *iprange.Set
		old   []cidr
	}
	var prefixes []*prefixSet
	byName := map[string]*prefixSet{}
	for i, op := range ops {
		spec := specs[i]
		if spec.Kind == ipset.KindPrefix {
			ps := byName[op.Set]
			if ps == nil {
				model, old, err := m.model(spec, now)
				if err != nil {
					return &ipset.Error{Op: "apply", Set: op.Set, Err: err}
				}
				ps = &prefixSet{spec, model, old}
				byName[op.Set] = ps
				prefixes = append(prefixes, ps)
			}
			for _, e := range norm[i] {
				if op.Kind == ipset.OpAdd {
					exp := time.Time{}
					if e.Timeout > 0 {
						exp = now.Add(e.Timeout)
					}
					ps.model.Add(e.Prefix, exp)
				} else {
					ps.model.Delete(e.Prefix)
				}
			}
			if op.Kind == ipset.OpFlush {
				ps.model.Clear()
			}
			continue
		}
		switch op.Kind {
		case ipset.OpFlush:
			if err := call(func() error { return m.h.IpsetFlush(op.Set) }); err != nil {
				return &ipset.Error{Op: "apply", Set: op.Set, Err: kernelErr(err)}
			}
		case ipset.OpAdd, ipset.OpDelete:
			for _, e := range norm[i] {
				en := entry(spec, e, seconds(e.Timeout))
				err := call(func() error {
					if op.Kind == ipset.OpAdd {
						return m.h.IpsetAdd(op.Set, en)
					}
					return m.h.IpsetDel(op.Set, en)
				})
				if err != nil {
					return &ipset.Error{Op: "apply", Set: op.Set, Element: e.String(), Err: kernelErr(err)}
				}
			}
		}
	}
	for _, ps := range prefixes {
		nw := cidrs(ps.model)
		removes := slices.ContainsFunc(ps.old, func(o cidr) bool {
			return !slices.ContainsFunc(nw, func(n cidr) bool { return n.p == o.p })
		})
		if removes {
			if err := m.swapIn(ps.spec, nw, now); err != nil {
				return err
			}
			continue
		}
		for _, n := range nw {
			if slices.ContainsFunc(ps.old, func(o cidr) bool { return o.p == n.p && o.exp.Equal(n.exp) }) {
				continue
			}
			to, ok := timeoutAt(n.exp, m.cfg.now())
			if !ok {
				continue
			}
			e := ipset.Element{Prefix: n.p}
			if err := call(func() error { return m.h.IpsetAdd(ps.spec.Name, entry(ps.spec, e, to)) }); err != nil {
				return &ipset.Error{Op: "apply", Set: ps.spec.Name, Element: e.String(), Err: kernelErr(err)}
			}
		}
	}
	return nil
}

// swapIn makes content the set's content atomically: a temporary set of the same
// type is filled, swapped with the set, and destroyed.
func (m *Manager) swapIn(spec ipset.Spec, content []cidr, now time.Time) error {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	tmp := "egressd-tmp-" + hex.EncodeToString(b)
	if err := m.create(tmp, spec); err != nil {
		return &ipset.Error{Op: "replace", Set: spec.Name, Err: fmt.Errorf("create temporary set %s: %w", tmp, kernelErr(err))}
	}
	defer func() { _ = call(func() error { return m.h.IpsetDestroy(tmp) }) }()
	for _, c := range content {
		to, ok := timeoutAt(c.exp, now)
		if !ok {
			continue
		}
		e := ipset.Element{Prefix: c.p}
		if err := call(func() error { return m.h.IpsetAdd(tmp, entry(spec, e, to)) }); err != nil {
			return &ipset.Error{Op: "replace", Set: spec.Name, Element: e.String(), Err: kernelErr(err)}
		}
	}
	if err := call(func() error { return m.h.IpsetSwap(spec.Name, tmp) }); err != nil {
		return &ipset.Error{Op: "replace", Set: spec.Name, Err: fmt.Errorf("swap with %s: %w", tmp, kernelErr(err))}
	}
	return nil
}

// Replace implements ipset.Manager atomically (temporary set + swap).
func (m *Manager) Replace(ctx context.Context, name string, elems []ipset.Element) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	spec, err := m.spec(name)
	if err != nil {
		return &ipset.Error{Op: "replace", Set: name, Err: err}
	}
	norm, err := normalize("replace", spec, elems)
	if err != nil {
		return err
	}
	now := m.cfg.now()
	if spec.Kind == ipset.KindPrefix {
		var s iprange.Set
		for _, e := range norm {
			exp := time.Time{}
			if e.Timeout > 0 {
				exp = now.Add(e.Timeout)
			}
			s.Add(e.Prefix, exp)
		}
		return m.swapIn(spec, cidrs(&s), now)
	}
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	tmp := "egressd-tmp-" + hex.EncodeToString(b)
	if err := m.create(tmp, spec); err != nil {
		if errors.Is(kernelErr(err), ipset.ErrNotExist) {
			delete(m.specs, name)
		}
		return &ipset.Error{Op: "replace", Set: name, Err: fmt.Errorf("create temporary set %s: %w", tmp, kernelErr(err))}
	}
	defer func() { _ = call(func() error { return m.h.IpsetDestroy(tmp) }) }()
	for _, e := range norm {
		en := entry(spec, e, seconds(e.Timeout))
		if err := call(func() error { return m.h.IpsetAdd(tmp, en) }); err != nil {
			return &ipset.Error{Op: "replace", Set: name, Element: e.String(), Err: kernelErr(err)}
		}
	}
	if err := call(func() error { return m.h.IpsetSwap(name, tmp) }); err != nil {
		err = kernelErr(err)
		if errors.Is(err, ipset.ErrNotExist) {
			delete(m.specs, name)
		}
		return &ipset.Error{Op: "replace", Set: name, Err: err}
	}
	return nil
}

// List implements ipset.Manager; Element.Timeout is the remaining time (seconds).
func (m *Manager) List(ctx context.Context, name string) ([]ipset.Element, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	spec, err := m.spec(name)
	if err != nil {
		return nil, &ipset.Error{Op: "list", Set: name, Err: err}
	}
	es, err := m.entries(spec)
	if err != nil {
		if errors.Is(err, ipset.ErrNotExist) {
			delete(m.specs, name)
		}
		return nil, &ipset.Error{Op: "list", Set: name, Err: err}
	}
	if spec.Kind == ipset.KindPrefix {
		now := m.cfg.now()
		var s iprange.Set
		for _, e := range es {
			exp := time.Time{}
			if e.Timeout > 0 {
				exp = now.Add(e.Timeout)
			}
			s.Add(e.Prefix, exp)
		}
		es = es[:0]
		for _, p := range s.Prefixes() {
			e := ipset.Element{Prefix: p.Prefix}
			if !p.Expiry.IsZero() {
				e.Timeout = p.Expiry.Sub(now)
			}
			es = append(es, e)
		}
	}
	ipset.SortElements(es)
	return es, nil
}

// Destroy implements ipset.Manager; absent sets are skipped. A set that an
// iptables rule references cannot be destroyed (the error says so).
func (m *Manager) Destroy(ctx context.Context, sets ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range sets {
		delete(m.specs, name)
		err := call(func() error { return m.h.IpsetDestroy(name) })
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return &ipset.Error{Op: "destroy", Set: name, Err: kernelErr(err)}
		}
	}
	return nil
}
