package calico

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestLabelSelectors: Calico's selector grammar into label selectors whose
// union selects exactly what the Calico expression selects (checked on
// label sets with the evaluator below).
func TestLabelSelectors(t *testing.T) {
	for sel, want := range map[string]int{ // number of || alternatives
		``:                                   1,
		`all()`:                              1,
		`app == "a"`:                         1,
		`app == 'a' && tier != "db"`:         1,
		`app in {"a", 'b'} && has(tier)`:     1,
		`!has(tier) || app not in {"x"}`:     2,
		`!(app == "a" && tier == "b")`:       2,
		`!(app == "a" || tier == "b")`:       1,
		`(a == "1" || b == "2") && c == "3"`: 2,
		`!!has(x)`:                           1,
		`k not in {}`:                        1,
	} {
		got, err := LabelSelectors(sel, nil)
		if err != nil || len(got) != want {
			t.Errorf("%q: %d alternatives, %v; want %d", sel, len(got), err, want)
		}
	}
	for sel, reason := range map[string]string{
		`app == "a`:              "unterminated",
		`app = "a"`:              "want an operator",
		`app contains "x"`:       `"contains" has no label-selector equivalent`,
		`global()`:               "host endpoints",
		`!all()`:                 "matches nothing",
		`k in {}`:                "matches nothing",
		`(a == "1"`:              "missing )",
		strings.Repeat("(", 100): "nested",
		`a == "1" ||`:            "unexpected end",
		`a == "1" b == "2"`:      "unexpected",
	} {
		if _, err := LabelSelectors(sel, nil); err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("%q: %v, want %q", clip(sel), err, reason)
		}
	}
	// The namespace label is renamed.
	got, _ := LabelSelectors(`projectcalico.org/name == "shop"`, namespaceKeys)
	if got[0].MatchLabels["kubernetes.io/metadata.name"] != "shop" {
		t.Errorf("namespace key: %+v", got)
	}
}

// eval is Calico's meaning of a parsed selector on a label set.
func eval(e Expr, l map[string]string) bool {
	switch x := e.(type) {
	case exprAll:
		return true
	case exprNot:
		return !eval(x.X, l)
	case exprAnd:
		return eval(x.L, l) && eval(x.R, l)
	case exprOr:
		return eval(x.L, l) || eval(x.R, l)
	case exprHas:
		_, ok := l[x.Key]
		return ok
	case exprCmp:
		v, ok := l[x.Key]
		in := false
		for _, w := range x.Values {
			in = in || (ok && v == w)
		}
		switch x.Op {
		case "==", "in":
			return in
		case "!=", "not in":
			return !in
		}
	}
	panic("unexpected")
}

// labelSets are the label sets the equivalence is checked on.
var labelSets = []map[string]string{
	{}, {"a": "1"}, {"a": "2"}, {"b": "2"}, {"a": "1", "b": "2"}, {"a": "1", "c": "3"}, {"c": "3"}, {"a": "2", "b": "1", "c": "3"},
}

// FuzzLabelSelectors: parsing never panics, and whenever a selector converts,
// the union of its label selectors selects exactly the label sets the Calico
// expression does.
func FuzzLabelSelectors(f *testing.F) {
	for _, s := range []string{`a == "1"`, `!(a == "1" && b == "2") || has(c)`, `a in {"1","2"} && b not in {"2"}`, `!has(a) && c != "3"`, `(a == "1" || b == "2") && !(c == "3" || a == "2")`, `all()`, `global()`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sel string) {
		e, err := ParseSelector(sel)
		if err != nil {
			return
		}
		sels, err := LabelSelectors(sel, nil)
		if err != nil {
			return
		}
		for _, ls := range labelSets {
			want := eval(e, ls)
			got := false
			for i := range sels {
				s, err := metav1.LabelSelectorAsSelector(&sels[i])
				if err != nil {
					return // a key or value the API would refuse: validate reports it
				}
				got = got || s.Matches(labels.Set(ls))
			}
			if got != want {
				t.Fatalf("%q on %v: label selectors %v say %v, Calico %v", sel, ls, sels, got, want)
			}
		}
	})
}
