// Package chain follows the alias chain of a DNS answer: from the question
// name through the CNAME targets and the names DNAME records substitute
// (RFC 6672), to the names that own the answer's addresses.
//
// The resolver decides policy on every name of the chain (a CNAME into a
// denied name must not open the denied name's addresses), removes addresses
// whose owner is not on the chain, and the L7 proxy decides the chain of the
// names it resolves the same way. The package is pure: no I/O.
package chain

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// MaxNames bounds the names a chain collects (the question and its links:
// targets, DNAME owners and targets). An answer that would add more is followed only that far: the
// addresses of names beyond the bound are not on the chain (they are scrubbed
// and never programmed), so the bound can only take addresses away.
const MaxNames = 64

// Chain is the alias chain of an answer. Names are lower case and fully
// qualified ("www.example.com."), as miekg/dns writes them.
type Chain struct {
	// Owners are the names whose A/AAAA records belong to the answer: the
	// question name first, then every CNAME target and DNAME-substituted
	// name reached from it, in the order they are reached.
	Owners []string
	// Links are the names of the chain other than the question, in the order
	// they are reached: CNAME targets, the owner and target of every DNAME
	// that applies to a chain name, and the names it substitutes. Each is a
	// name the answer makes the client reach through the question, so each
	// is decided by policy like the question. Empty when the answer has no
	// alias on the question's chain.
	Links []string
}

// Of returns the chain of m's answer section for its (single) question; the
// zero Chain when m has no single question.
func Of(m *dns.Msg) Chain {
	if len(m.Question) != 1 {
		return Chain{}
	}
	return Follow(m.Question[0].Name, m.Answer)
}

// Follow returns the chain of answer records for the question name qname.
// CNAME records are followed from their owner to their target; a DNAME
// applies to the names strictly below its owner and substitutes its target
// for the owner's suffix. Records whose owner is not on the chain (glue an
// upstream added, forged records) are ignored. Loops end the walk.
func Follow(qname string, answer []dns.RR) Chain {
	q := lowerFQDN(qname)
	c := Chain{Owners: []string{q}}
	if !HasAlias(answer) {
		return c
	}
	for i := 0; i < len(c.Owners); i++ {
		n := c.Owners[i]
		for _, rr := range answer {
			switch rr := rr.(type) {
			case *dns.CNAME:
				if strings.EqualFold(rr.Hdr.Name, n) {
					c.addOwner(lowerFQDN(rr.Target))
				}
			case *dns.DNAME:
				owner := lowerFQDN(rr.Hdr.Name)
				if owner == n || !dns.IsSubDomain(owner, n) {
					continue // a DNAME applies below its owner only
				}
				target := lowerFQDN(rr.Target)
				c.addLink(owner)
				c.addLink(target)
				prefix := n[:len(n)-len(owner)] // "www." of "www.alias.test." under "alias.test."
				syn := prefix + target
				if target == "." {
					syn = prefix
				}
				if _, ok := dns.IsDomainName(syn); ok && len(syn) <= 255 {
					c.addOwner(syn)
				}
			}
		}
	}
	return c
}

// HasAlias reports whether answer holds a CNAME or DNAME record: without one
// the chain is the question alone (Follow's Links are empty). It does not
// allocate.
func HasAlias(answer []dns.RR) bool {
	for _, rr := range answer {
		if t := rr.Header().Rrtype; t == dns.TypeCNAME || t == dns.TypeDNAME {
			return true
		}
	}
	return false
}

// Owns reports whether name owns records of the chain (case-insensitive).
func (c Chain) Owns(name string) bool {
	for _, o := range c.Owners {
		if strings.EqualFold(o, name) || strings.EqualFold(o, name+".") {
			return true
		}
	}
	return false
}

func (c *Chain) addOwner(n string) {
	for _, o := range c.Owners {
		if o == n {
			return
		}
	}
	if len(c.Links) >= MaxNames-1 {
		return
	}
	c.Owners = append(c.Owners, n)
	c.addLink(n)
}

func (c *Chain) addLink(n string) {
	if n == c.Owners[0] {
		return
	}
	for _, l := range c.Links {
		if l == n {
			return
		}
	}
	if len(c.Links) >= MaxNames-1 {
		return
	}
	c.Links = append(c.Links, n)
}

// lowerFQDN is name in lower case with the root dot.
func lowerFQDN(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}

// Addr returns the address of an A or AAAA record (IPv4-mapped IPv6
// addresses unmapped); ok is false for other records.
func Addr(rr dns.RR) (ip netip.Addr, ok bool) {
	switch rr := rr.(type) {
	case *dns.A:
		return netip.AddrFromSlice(rr.A.To4())
	case *dns.AAAA:
		ip, ok = netip.AddrFromSlice(rr.AAAA.To16())
		return ip.Unmap(), ok
	}
	return netip.Addr{}, false
}
