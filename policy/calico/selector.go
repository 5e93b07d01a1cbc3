// Package calico converts Calico (projectcalico.org/v3) policies into egressd
// ClusterFirewallPolicy objects, keeping Calico's semantics (tiers, order,
// first match, the end-of-tier drop), and refuses with the reason and the field
// what egressd cannot express. It is pure: it reads bytes and returns objects.
package calico

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Expr is a parsed Calico selector expression.
type Expr interface{ String() string }

type (
	exprAll    struct{}
	exprGlobal struct{}
	exprNot    struct{ X Expr }
	exprAnd    struct{ L, R Expr }
	exprOr     struct{ L, R Expr }
	exprHas    struct{ Key string }
	// exprCmp is key == v, key != v, key in {...}, key not in {...},
	// key contains v, key starts with v, key ends with v.
	exprCmp struct {
		Key, Op string
		Values  []string
	}
)

func (exprAll) String() string    { return "all()" }
func (exprGlobal) String() string { return "global()" }
func (e exprNot) String() string  { return "!(" + e.X.String() + ")" }
func (e exprAnd) String() string  { return "(" + e.L.String() + " && " + e.R.String() + ")" }
func (e exprOr) String() string   { return "(" + e.L.String() + " || " + e.R.String() + ")" }
func (e exprHas) String() string  { return "has(" + e.Key + ")" }
func (e exprCmp) String() string {
	switch e.Op {
	case "in", "not in":
		q := make([]string, len(e.Values))
		for i, v := range e.Values {
			q[i] = fmt.Sprintf("%q", v)
		}
		return e.Key + " " + e.Op + " {" + strings.Join(q, ", ") + "}"
	}
	return fmt.Sprintf("%s %s %q", e.Key, e.Op, e.Values[0])
}

// maxSelectorLen bounds a selector: Calico's are short; a megabyte one is a mistake.
const maxSelectorLen = 4096

// ParseSelector parses a Calico selector: `key == "v"`, `!=`, `in {..}`,
// `not in {..}`, `has(key)`, `contains`, `starts with`, `ends with`, `!`,
// `&&`, `||`, parentheses, `all()` and `global()`. The empty selector is
// all().
func ParseSelector(s string) (Expr, error) {
	if len(s) > maxSelectorLen {
		return nil, fmt.Errorf("selector longer than %d bytes", maxSelectorLen)
	}
	if strings.TrimSpace(s) == "" {
		return exprAll{}, nil
	}
	p := &parser{src: s}
	e, err := p.or(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos < len(p.src) {
		return nil, p.errf("unexpected %q", p.rest(10))
	}
	return e, nil
}

type parser struct {
	src string
	pos int
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("selector %q: at offset %d: %s", clip(p.src), p.pos, fmt.Sprintf(format, args...))
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

func (p *parser) rest(n int) string {
	r := p.src[p.pos:]
	if len(r) > n {
		r = r[:n]
	}
	return r
}

func (p *parser) space() {
	for p.pos < len(p.src) && strings.ContainsRune(" \t\r\n", rune(p.src[p.pos])) {
		p.pos++
	}
}

// accept consumes tok (after spaces) when it comes next.
func (p *parser) accept(tok string) bool {
	p.space()
	if strings.HasPrefix(p.src[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

// acceptWord consumes a keyword that is not the start of a longer key.
func (p *parser) acceptWord(w string) bool {
	p.space()
	if !strings.HasPrefix(p.src[p.pos:], w) {
		return false
	}
	if end := p.pos + len(w); end < len(p.src) && isKeyChar(p.src[end]) {
		return false
	}
	p.pos += len(w)
	return true
}

const maxDepth = 64

func (p *parser) or(depth int) (Expr, error) {
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.accept("||") {
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = exprOr{l, r}
	}
	return l, nil
}

func (p *parser) and(depth int) (Expr, error) {
	l, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for p.accept("&&") {
		r, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		l = exprAnd{l, r}
	}
	return l, nil
}

func (p *parser) unary(depth int) (Expr, error) {
	if depth > maxDepth {
		return nil, p.errf("nested more than %d levels", maxDepth)
	}
	switch {
	case p.accept("!") && !strings.HasPrefix(p.src[p.pos:], "="):
		x, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return exprNot{x}, nil
	case p.accept("("):
		x, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.accept(")") {
			return nil, p.errf("missing )")
		}
		return x, nil
	case p.acceptWord("all"):
		if !p.accept("(") || !p.accept(")") {
			return nil, p.errf("want all()")
		}
		return exprAll{}, nil
	case p.acceptWord("global"):
		if !p.accept("(") || !p.accept(")") {
			return nil, p.errf("want global()")
		}
		return exprGlobal{}, nil
	case p.acceptWord("has"):
		if !p.accept("(") {
			return nil, p.errf("want has(key)")
		}
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		if !p.accept(")") {
			return nil, p.errf("want ) after has(%s", k)
		}
		return exprHas{k}, nil
	}
	k, err := p.key()
	if err != nil {
		return nil, err
	}
	switch {
	case p.accept("=="):
		v, err := p.str()
		return exprCmp{k, "==", []string{v}}, err
	case p.accept("!="):
		v, err := p.str()
		return exprCmp{k, "!=", []string{v}}, err
	case p.acceptWord("in"):
		vs, err := p.set()
		return exprCmp{k, "in", vs}, err
	case p.acceptWord("not"):
		if !p.acceptWord("in") {
			return nil, p.errf("want `not in`")
		}
		vs, err := p.set()
		return exprCmp{k, "not in", vs}, err
	case p.acceptWord("contains"):
		v, err := p.str()
		return exprCmp{k, "contains", []string{v}}, err
	case p.acceptWord("starts"):
		if !p.acceptWord("with") {
			return nil, p.errf("want `starts with`")
		}
		v, err := p.str()
		return exprCmp{k, "starts with", []string{v}}, err
	case p.acceptWord("ends"):
		if !p.acceptWord("with") {
			return nil, p.errf("want `ends with`")
		}
		v, err := p.str()
		return exprCmp{k, "ends with", []string{v}}, err
	}
	return nil, p.errf("want an operator (==, !=, in, not in, contains, starts with, ends with) after %q", k)
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '/' || c == '-'
}

func (p *parser) key() (string, error) {
	p.space()
	start := p.pos
	for p.pos < len(p.src) && isKeyChar(p.src[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		if p.pos >= len(p.src) {
			return "", p.errf("unexpected end, want a label key")
		}
		return "", p.errf("unexpected %q, want a label key", p.rest(10))
	}
	return p.src[start:p.pos], nil
}

func (p *parser) str() (string, error) {
	p.space()
	if p.pos >= len(p.src) || (p.src[p.pos] != '"' && p.src[p.pos] != '\'') {
		return "", p.errf("want a quoted value")
	}
	q := p.src[p.pos]
	end := strings.IndexByte(p.src[p.pos+1:], q)
	if end < 0 {
		return "", p.errf("unterminated string")
	}
	v := p.src[p.pos+1 : p.pos+1+end]
	p.pos += end + 2
	return v, nil
}

func (p *parser) set() ([]string, error) {
	if !p.accept("{") {
		return nil, p.errf("want {")
	}
	var out []string
	if p.accept("}") {
		return out, nil
	}
	for {
		v, err := p.str()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		if p.accept("}") {
			return out, nil
		}
		if !p.accept(",") {
			return nil, p.errf("want , or }")
		}
	}
}

// literal is one requirement of a conjunction.
type literal struct {
	key, op string // op: In, NotIn, Exists, DoesNotExist
	values  []string
}

// maxTerms bounds the disjunctive normal form of a selector: one egressd
// peer (or policy) per term.
const maxTerms = 16

// errNone is a selector that matches nothing (!all()).
var errNone = errors.New("matches nothing")

// dnf returns e as a disjunction of conjunctions of literals, negations
// pushed down; nil terms means all().
func dnf(e Expr, neg bool) ([][]literal, error) {
	switch x := e.(type) {
	case exprAll:
		if neg {
			return nil, errNone
		}
		return [][]literal{{}}, nil
	case exprGlobal:
		return nil, errors.New("global() selects host endpoints and network sets, which egressd does not have")
	case exprNot:
		return dnf(x.X, !neg)
	case exprHas:
		op := metav1.LabelSelectorOpExists
		if neg {
			op = metav1.LabelSelectorOpDoesNotExist
		}
		return [][]literal{{{key: x.Key, op: string(op)}}}, nil
	case exprCmp:
		var op string
		switch x.Op {
		case "==", "in":
			op = string(metav1.LabelSelectorOpIn)
			if neg {
				op = string(metav1.LabelSelectorOpNotIn)
			}
		case "!=", "not in":
			op = string(metav1.LabelSelectorOpNotIn)
			if neg {
				op = string(metav1.LabelSelectorOpIn)
			}
		default:
			return nil, fmt.Errorf("%q has no label-selector equivalent (only ==, !=, in, not in, has)", x.Op)
		}
		if len(x.Values) == 0 {
			// key in {} matches nothing, key not in {} everything.
			if op == string(metav1.LabelSelectorOpIn) {
				return nil, errNone
			}
			return [][]literal{{}}, nil
		}
		vals := append([]string(nil), x.Values...)
		sort.Strings(vals)
		return [][]literal{{{key: x.Key, op: op, values: vals}}}, nil
	case exprAnd, exprOr:
		var l, r Expr
		isAnd := false
		if a, ok := x.(exprAnd); ok {
			l, r, isAnd = a.L, a.R, true
		} else {
			o := x.(exprOr)
			l, r = o.L, o.R
		}
		if neg {
			isAnd = !isAnd // De Morgan
		}
		lt, lerr := dnf(l, neg)
		rt, rerr := dnf(r, neg)
		if isAnd {
			if errors.Is(lerr, errNone) || errors.Is(rerr, errNone) {
				return nil, errNone
			}
			if lerr != nil {
				return nil, lerr
			}
			if rerr != nil {
				return nil, rerr
			}
			var out [][]literal
			for _, a := range lt {
				for _, b := range rt {
					out = append(out, append(append([]literal(nil), a...), b...))
					if len(out) > maxTerms {
						return nil, fmt.Errorf("more than %d alternatives once written without ||", maxTerms)
					}
				}
			}
			return out, nil
		}
		switch {
		case errors.Is(lerr, errNone) && errors.Is(rerr, errNone):
			return nil, errNone
		case errors.Is(lerr, errNone):
			return rt, rerr
		case errors.Is(rerr, errNone):
			return lt, lerr
		case lerr != nil:
			return nil, lerr
		case rerr != nil:
			return nil, rerr
		}
		out := append(lt, rt...)
		if len(out) > maxTerms {
			return nil, fmt.Errorf("more than %d alternatives (||)", maxTerms)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown expression %T", e)
}

// LabelSelectors converts a Calico selector into label selectors whose union
// selects the same labels (one per || alternative); keyMap renames keys (the
// namespace label projectcalico.org/name is kubernetes.io/metadata.name).
func LabelSelectors(sel string, keyMap map[string]string) ([]metav1.LabelSelector, error) {
	e, err := ParseSelector(sel)
	if err != nil {
		return nil, err
	}
	terms, err := dnf(e, false)
	if err != nil {
		if errors.Is(err, errNone) {
			return nil, fmt.Errorf("selector %q matches nothing", clip(sel))
		}
		return nil, fmt.Errorf("selector %q: %w", clip(sel), err)
	}
	out := make([]metav1.LabelSelector, 0, len(terms))
	for _, t := range terms {
		var ls metav1.LabelSelector
		for _, l := range t {
			k := l.key
			if m, ok := keyMap[k]; ok {
				k = m
			}
			if l.op == string(metav1.LabelSelectorOpIn) && len(l.values) == 1 {
				if ls.MatchLabels == nil {
					ls.MatchLabels = map[string]string{}
				}
				if prev, dup := ls.MatchLabels[k]; !dup || prev == l.values[0] {
					ls.MatchLabels[k] = l.values[0]
					continue
				}
			}
			ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOperator(l.op), Values: l.values})
		}
		out = append(out, ls)
	}
	return out, nil
}
