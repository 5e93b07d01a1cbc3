// Package ipset owns kernel IP sets: the one interface that the resolver and the
// enforcer write addresses through, with an nftables-set backend (google/nftables)
// and an in-memory fake for unit tests. There is no ipset(8) backend: the dataplane
// is one nftables table, and nftables rules cannot match ipset sets.
//
// Every write is a batch of operations applied in one netlink transaction (up to a
// backend's message limit: nftset splits larger Applies into several transactions).
// Adding an element that already exists refreshes its timeout. Errors name the set
// and the element that failed.
package ipset

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Family is the address family of a set.
type Family uint8

const (
	// IPv4 sets hold IPv4 addresses or prefixes.
	IPv4 Family = 4
	// IPv6 sets hold IPv6 addresses or prefixes.
	IPv6 Family = 6
)

// String returns "ipv4" or "ipv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// FamilyOf returns the family of an address (IPv4-mapped IPv6 counts as IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Kind says what the elements of a set are.
type Kind uint8

const (
	// KindAddr is a hash set of single addresses (nftables ipv4_addr/ipv6_addr,
	// ipset hash:ip).
	KindAddr Kind = iota + 1
	// KindPrefix is an interval set of CIDR prefixes (nftables interval set,
	// ipset hash:net).
	KindPrefix
	// KindAddrPair is a set of (source address, destination address) pairs
	// (nftables concatenation ipv4_addr . ipv4_addr, ipset hash:net,net). The
	// resolver uses it for FQDN rules: (workload IP, answer IP).
	KindAddrPair
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindAddr:
		return "addr"
	case KindPrefix:
		return "prefix"
	case KindAddrPair:
		return "addr-pair"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Spec describes a set.
type Spec struct {
	// Name of the set, unique inside the backend (nftables: inside the table).
	Name string
	// Family of the addresses.
	Family Family
	// Kind of the elements.
	Kind Kind
	// Timeout is true when elements carry per-element timeouts.
	Timeout bool
}

// Element is one member of a set.
type Element struct {
	// Src is the first address of a KindAddrPair element; zero otherwise.
	Src netip.Addr
	// Prefix is the address (a full-length prefix) or, for KindPrefix sets, the CIDR.
	Prefix netip.Prefix
	// Timeout is the element's lifetime when the set has timeouts; zero means
	// no timeout. List reports the remaining time here.
	Timeout time.Duration
}

// Addr returns an element holding a single address.
func Addr(a netip.Addr, timeout time.Duration) Element {
	return Element{Prefix: netip.PrefixFrom(a, a.BitLen()), Timeout: timeout}
}

// Pair returns a KindAddrPair element (src, dst).
func Pair(src, dst netip.Addr, timeout time.Duration) Element {
	return Element{Src: src, Prefix: netip.PrefixFrom(dst, dst.BitLen()), Timeout: timeout}
}

// String renders the element as the kernel tools would ("10.0.0.1", "10.0.0.0/8",
// "10.0.0.1 . 1.2.3.4").
func (e Element) String() string {
	s := e.Prefix.String()
	if e.Prefix.IsValid() && e.Prefix.Bits() == e.Prefix.Addr().BitLen() {
		s = e.Prefix.Addr().String()
	}
	if e.Src.IsValid() {
		s = e.Src.String() + " . " + s
	}
	return s
}

// Key identifies the element regardless of its timeout.
func (e Element) Key() string {
	return e.Src.String() + "|" + e.Prefix.Masked().String()
}

// OpKind says what an Op does.
type OpKind uint8

const (
	// OpAdd adds elements, refreshing the timeout of those that exist.
	OpAdd OpKind = iota + 1
	// OpDelete removes elements; deleting an absent element is not an error.
	OpDelete
	// OpFlush removes every element of the set (Elements is ignored).
	OpFlush
)

// Op is one step of a batch.
type Op struct {
	Kind     OpKind
	Set      string
	Elements []Element
}

// Manager is a backend of kernel sets. Implementations are safe for concurrent use.
type Manager interface {
	// Ensure creates the sets that do not exist and adopts those that do (their
	// elements are kept), in one transaction. A set that exists with another
	// family, kind or timeout flag is an error.
	Ensure(ctx context.Context, specs ...Spec) error
	// Apply runs the operations in one transaction: all take effect or none.
	// Invalid operations change nothing. A backend may split an Apply larger
	// than one kernel message into several transactions applied in order
	// (nftset beyond WithMaxBatchBytes); a kernel error then leaves the ones
	// before it applied.
	Apply(ctx context.Context, ops ...Op) error
	// Replace makes elems the exact content of the set, atomically.
	Replace(ctx context.Context, set string, elems []Element) error
	// List returns the elements of a set, with their remaining timeouts.
	List(ctx context.Context, set string) ([]Element, error)
	// Destroy removes sets; an absent set is not an error.
	Destroy(ctx context.Context, sets ...string) error
}

// Error is returned for a failed operation; it names the set and, where known,
// the element.
type Error struct {
	Op      string
	Set     string
	Element string
	Err     error
}

func (e *Error) Error() string {
	if e.Element != "" {
		return fmt.Sprintf("ipset: %s set %q element %s: %v", e.Op, e.Set, e.Element, e.Err)
	}
	return fmt.Sprintf("ipset: %s set %q: %v", e.Op, e.Set, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Sentinel errors wrapped by *Error; test them with errors.Is.
var (
	// ErrNotExist: the set does not exist (Apply, Replace, List on an unknown set).
	ErrNotExist = errors.New("set does not exist")
	// ErrMismatch: Ensure found the set with another family, kind or timeout flag.
	ErrMismatch = errors.New("set exists with another definition")
	// ErrFamily: the element's address family is not the set's.
	ErrFamily = errors.New("address family does not match the set")
	// ErrInvalid: the spec or element is malformed (invalid address, prefix where an
	// address is expected, missing Src of a pair, negative timeout, bad name...).
	ErrInvalid = errors.New("invalid")
	// ErrUnsupported: the backend or the kernel cannot do this.
	ErrUnsupported = errors.New("not supported")
)

// Validate checks the spec itself (name, family, kind). Backends may add limits of
// their own (ipset names are at most 31 bytes).
func (s Spec) Validate() error {
	switch {
	case s.Name == "":
		return fmt.Errorf("%w spec: empty set name", ErrInvalid)
	case s.Family != IPv4 && s.Family != IPv6:
		return fmt.Errorf("%w spec: family %v", ErrInvalid, s.Family)
	case s.Kind < KindAddr || s.Kind > KindAddrPair:
		return fmt.Errorf("%w spec: kind %v", ErrInvalid, s.Kind)
	}
	return nil
}

// Normalize checks that e fits the set and returns it in canonical form: IPv4-mapped
// IPv6 addresses of IPv4 sets unmapped, prefixes masked, and the timeout dropped when
// the set has no timeouts. Errors wrap ErrFamily or ErrInvalid (not *Error: the
// caller adds the set and element).
func (s Spec) Normalize(e Element) (Element, error) {
	if !e.Prefix.IsValid() {
		return e, fmt.Errorf("%w element: no address", ErrInvalid)
	}
	if e.Timeout < 0 {
		return e, fmt.Errorf("%w element: negative timeout %v", ErrInvalid, e.Timeout)
	}
	if !s.Timeout {
		e.Timeout = 0
	}
	var err error
	if e.Prefix, err = normPrefix(s.Family, e.Prefix); err != nil {
		return e, err
	}
	switch s.Kind {
	case KindAddr, KindAddrPair:
		if e.Prefix.Bits() != e.Prefix.Addr().BitLen() {
			return e, fmt.Errorf("%w element: a %v set holds single addresses, not the prefix %v", ErrInvalid, s.Kind, e.Prefix)
		}
	case KindPrefix:
		e.Prefix = e.Prefix.Masked()
	}
	if s.Kind == KindAddrPair {
		if !e.Src.IsValid() {
			return e, fmt.Errorf("%w element: a pair needs a source address", ErrInvalid)
		}
		src, err := normPrefix(s.Family, netip.PrefixFrom(e.Src, e.Src.BitLen()))
		if err != nil {
			return e, err
		}
		e.Src = src.Addr()
	} else if e.Src.IsValid() {
		return e, fmt.Errorf("%w element: a source address is only allowed in pair sets", ErrInvalid)
	}
	return e, nil
}

func normPrefix(f Family, p netip.Prefix) (netip.Prefix, error) {
	a := p.Addr()
	if a.Zone() != "" {
		return p, fmt.Errorf("%w element: zoned address %v", ErrInvalid, a)
	}
	if f == IPv4 && a.Is4In6() {
		if p.Bits() < 96 {
			return p, fmt.Errorf("%w element: IPv4-mapped prefix %v shorter than /96", ErrInvalid, p)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		a = p.Addr()
	}
	if f == IPv6 && a.Is4In6() {
		return p, fmt.Errorf("%w: IPv4-mapped %v in an %v set", ErrFamily, p, f)
	}
	if (f == IPv4) != a.Is4() {
		return p, fmt.Errorf("%w: %v in an %v set", ErrFamily, p, f)
	}
	return p, nil
}

// SortElements sorts elements by source address, then prefix address, then length
// (the order List returns them in).
func SortElements(es []Element) {
	slices.SortFunc(es, func(a, b Element) int {
		if c := a.Src.Compare(b.Src); c != 0 {
			return c
		}
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
}
