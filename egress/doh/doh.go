// Package doh is the list of known public encrypted-DNS resolvers that
// egressd keeps pods from reaching directly (issue 16): the embedded default
// (resolvers.txt, with its sources) and the parser of replacement files
// (egressd --doh-resolvers).
package doh

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

//go:embed resolvers.txt
var defaultList string

// MaxEntries bounds a list (the kernel set stays small and a mistaken file
// cannot blow it up).
const MaxEntries = 4096

// Resolver is one entry: an address range and the resolver's DoH host name.
type Resolver struct {
	Prefix netip.Prefix
	Name   string
}

// List is a parsed resolver list.
type List []Resolver

// Default returns the list shipped with egressd.
func Default() List {
	l, err := Parse(strings.NewReader(defaultList))
	if err != nil {
		panic("doh: embedded list: " + err.Error())
	}
	return l
}

// Parse reads "<address or CIDR> <host name>" lines ("#" comments, blank
// lines ignored). Errors name the line.
func Parse(r io.Reader) (List, error) {
	var out List
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 4096)
	n := 0
	for sc.Scan() {
		n++
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) > 2 {
			return nil, fmt.Errorf("line %d: want \"<address or CIDR> <host name>\"", n)
		}
		p, err := parsePrefix(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		name := ""
		if len(f) == 2 {
			name = strings.ToLower(strings.TrimSuffix(f[1], "."))
			if len(name) > 253 {
				return nil, fmt.Errorf("line %d: host name longer than 253 characters", n)
			}
		}
		if len(out) == MaxEntries {
			return nil, fmt.Errorf("more than %d entries", MaxEntries)
		}
		out = append(out, Resolver{Prefix: p, Name: name})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if len(s) > 43 {
		return netip.Prefix{}, fmt.Errorf("%.43q…: not an address or CIDR", s)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p != p.Masked() {
			return p, fmt.Errorf("%s: host bits set", s)
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Prefixes returns the address ranges of the list.
func (l List) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(l))
	for _, r := range l {
		out = append(out, r.Prefix)
	}
	return out
}

// Contains reports whether a is in the list.
func (l List) Contains(a netip.Addr) bool { _, ok := l.NameOf(a); return ok }

// NameOf returns the host name of the (first) entry containing a.
func (l List) NameOf(a netip.Addr) (string, bool) {
	a = a.Unmap()
	for _, r := range l {
		if r.Prefix.Contains(a) {
			return r.Name, true
		}
	}
	return "", false
}

// Names returns the distinct host names of the list, sorted.
func (l List) Names() []string {
	var out []string
	for _, r := range l {
		if r.Name != "" {
			out = append(out, r.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// HasName reports whether name (lower case, no trailing dot) is the host
// name of an entry.
func (l List) HasName(name string) bool {
	for _, r := range l {
		if r.Name == name && name != "" {
			return true
		}
	}
	return false
}
