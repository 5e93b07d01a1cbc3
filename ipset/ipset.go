// Package ipset owns kernel IP sets: the one interface that the resolver and the
// enforcer write addresses through, with an nftables-set backend (google/nftables),
// an ipset backend (vishvananda/netlink) for hosts that run iptables, and an
// in-memory fake for unit tests.
//
// Every write is a batch of operations applied in one netlink transaction. Adding an
// element that already exists refreshes its timeout. Errors name the set and the
// element that failed.
package ipset

import (
	"context"
	"fmt"
	"net/netip"
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
