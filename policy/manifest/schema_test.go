package manifest

import (
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/deploy/crds"
)

// TestCRDSchemaKeywordsAreKnown: every keyword of every schema of deploy/crds
// is one Schema checks or knowingly leaves to the policy package (CEL rules)
// or to no one (descriptions). A CRD regenerated with a new keyword (a
// minItems, a oneOf) fails here until file mode checks it too.
func TestCRDSchemaKeywordsAreKnown(t *testing.T) {
	files, err := fs.Glob(crds.FS, "*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs embedded: %v", err)
	}
	for _, f := range files {
		data, _ := fs.ReadFile(crds.FS, f)
		var crd struct {
			Spec struct {
				Versions []struct {
					Name   string
					Schema struct {
						OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
					}
				}
			}
		}
		if err := Unmarshal(data, &crd, false); err != nil {
			t.Fatal(f, err)
		}
		for _, v := range crd.Spec.Versions {
			var walk func(s map[string]any, path string)
			walk = func(s map[string]any, path string) {
				for k, sub := range s {
					if !SchemaKeywords[k] {
						t.Errorf("%s %s: %s: keyword %q is not checked in file mode (policy/manifest Schema)", f, v.Name, path, k)
					}
					switch k {
					case "properties":
						for name, p := range sub.(map[string]any) {
							walk(p.(map[string]any), path+"."+name)
						}
					case "items", "additionalProperties":
						if m, ok := sub.(map[string]any); ok {
							walk(m, path+"[]")
						}
					case "anyOf", "allOf", "oneOf":
						for _, alt := range sub.([]any) {
							walk(alt.(map[string]any), path)
						}
					}
				}
			}
			walk(v.Schema.OpenAPIV3Schema, "")
		}
	}
	all, err := CRDs()
	if err != nil || len(all) == 0 {
		t.Fatalf("CRDs: %d, %v", len(all), err)
	}
}

// node is one schema node reached from a CRD's root, with its field path in
// the two forms the test needs: the steps to build a document reaching it,
// and the path a problem names.
type node struct {
	steps  []string // property names; "[]" for an array item, "{}" for a map value
	schema *Schema
}

func (n node) path() string {
	var b strings.Builder
	for _, s := range n.steps {
		switch s {
		case "[]":
			b.WriteString("[0]")
		case "{}":
			b.WriteString("[k]")
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s)
		}
	}
	return b.String()
}

// nodes lists every schema node of s (depth-first, properties sorted).
func nodes(s *Schema, steps []string, out *[]node) {
	*out = append(*out, node{steps: steps, schema: s})
	names := make([]string, 0, len(s.Properties))
	for k := range s.Properties {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		nodes(s.Properties[k], append(append([]string(nil), steps...), k), out)
	}
	if s.Items != nil {
		nodes(s.Items, append(append([]string(nil), steps...), "[]"), out)
	}
	if s.AdditionalProperties != nil {
		nodes(s.AdditionalProperties, append(append([]string(nil), steps...), "{}"), out)
	}
}

// minimal returns the smallest value the schema accepts: an object with its
// required fields, an empty array, the first enum value, the minimum.
func minimal(s *Schema) any {
	if s.IntOrString {
		return 80
	}
	switch s.Type {
	case "object":
		m := map[string]any{}
		for _, r := range s.Required {
			m[r] = minimal(s.Properties[r])
		}
		// minProperties (a one-of object such as a ClusterNetworkPolicy
		// subject): add optional properties in name order.
		if s.MinProperties != nil {
			keys := slices.Sorted(maps.Keys(s.Properties))
			for _, k := range keys {
				if int64(len(m)) >= *s.MinProperties {
					break
				}
				if _, ok := m[k]; !ok {
					m[k] = minimal(s.Properties[k])
				}
			}
		}
		return m
	case "array":
		return []any{}
	case "string":
		if len(s.Enum) > 0 {
			return s.Enum[0]
		}
		if s.Format == "date-time" {
			return "2026-01-01T00:00:00Z"
		}
		if s.Pattern != "" {
			return "Ok"
		}
		return "a"
	case "integer", "number":
		if s.Minimum != nil {
			return int(*s.Minimum)
		}
		return 1
	case "boolean":
		return true
	}
	return nil
}

// document builds a valid object of crd in which the path of steps exists
// (objects with their required fields, arrays with one item), and calls
// set with the parent holding the last step, to change it.
func document(crd *CRD, steps []string, set func(parent map[string]any, key string)) map[string]any {
	doc := minimal(crd.Schema).(map[string]any)
	doc["apiVersion"], doc["kind"] = crd.APIVersion(), crd.Kind
	meta := map[string]any{"name": "a"}
	if crd.Namespaced {
		meta["namespace"] = "x"
	}
	doc["metadata"] = meta
	var cur any = doc
	s := crd.Schema
	for i, step := range steps {
		last := i == len(steps)-1
		switch step {
		case "[]":
			arr := cur.([]any)
			if len(arr) == 0 {
				arr = append(arr, minimal(s.Items))
			}
			if last {
				tmp := map[string]any{"v": arr[0]}
				set(tmp, "v")
				arr[0] = tmp["v"]
				writeBack(doc, steps[:i], arr)
				return doc
			}
			// Arrays are reached through their parent map: write back.
			s = s.Items
			cur = arr[0]
			writeBack(doc, steps[:i], arr)
		case "{}":
			m := cur.(map[string]any)
			if last {
				set(m, "k")
				return doc
			}
			if m["k"] == nil {
				m["k"] = minimal(s.AdditionalProperties)
			}
			s = s.AdditionalProperties
			cur = m["k"]
		default:
			m := cur.(map[string]any)
			if last {
				set(m, step)
				return doc
			}
			if m[step] == nil {
				m[step] = minimal(s.Properties[step])
			}
			s = s.Properties[step]
			cur = m[step]
		}
	}
	return doc
}

// writeBack stores arr at the path of steps in doc.
func writeBack(doc map[string]any, steps []string, arr []any) {
	var cur any = doc
	for i, step := range steps {
		last := i == len(steps)-1
		switch step {
		case "[]":
			cur = cur.([]any)[0]
		case "{}":
			step = "k"
			fallthrough
		default:
			if last {
				cur.(map[string]any)[step] = arr
				return
			}
			cur = cur.(map[string]any)[step]
		}
	}
}

// decodeProblems decodes a document and returns the problems of the field.
func decodeProblems(t *testing.T, doc map[string]any, replace ...string) (all string, atField func(string) []string) {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for i := 0; i+1 < len(replace); i += 2 {
		text = strings.ReplaceAll(text, replace[i], replace[i+1])
	}
	objs, err := Decode("test", strings.NewReader(text))
	var msgs []string
	var problems []*Problem
	if err != nil {
		msgs = append(msgs, err.Error())
		for _, leaf := range leavesOf(err) {
			if p, ok := leaf.(*Problem); ok {
				problems = append(problems, p)
			}
		}
	}
	for i := range objs {
		if err := objs[i].Validate(); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	return text + "\n=> " + strings.Join(msgs, "\n"), func(field string) []string {
		var out []string
		for _, p := range problems {
			if p.Field == field {
				out = append(out, p.Reason)
			}
		}
		return out
	}
}

func leavesOf(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leavesOf(e)...)
		}
		return out
	}
	return []error{err}
}

// TestFileModeRejectsWhatTheCRDRejects is driven by the schemas of
// deploy/crds: for every field of every CRD, each constraint the schema
// states (required, enum, bounds, lengths, item counts, type, no unknown
// fields) is broken in an otherwise valid document, and file mode must
// report a problem at exactly that field's path. The minimal document of
// each CRD (its required fields only) is valid.
func TestFileModeRejectsWhatTheCRDRejects(t *testing.T) {
	all, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, crd := range all {
		t.Run(crd.Kind, func(t *testing.T) {
			if out, _ := decodeProblems(t, document(crd, nil, nil)); strings.Contains(out, "=> test") {
				t.Fatalf("the minimal valid %s is refused:\n%s", crd.Kind, out)
			}
			var ns []node
			nodes(crd.Schema, nil, &ns)
			for _, n := range ns {
				s := n.schema
				if len(n.steps) == 0 || n.steps[0] == "apiVersion" || n.steps[0] == "kind" {
					continue // read before the schema: "apiVersion and kind are required"
				}
				path := n.path()
				expect := func(what, wantReason string, doc map[string]any, replace ...string) {
					t.Helper()
					checked++
					out, at := decodeProblems(t, doc, replace...)
					for _, r := range at(path) {
						if strings.Contains(r, wantReason) {
							return
						}
					}
					t.Errorf("%s %s: %s: no problem at %s saying %q:\n%s", crd.Kind, path, what, path, wantReason, out)
				}
				// Required fields of the parent.
				last := n.steps[len(n.steps)-1]
				if last != "[]" && last != "{}" && isRequired(crd.Schema, n.steps) {
					expect("required field left out", "Required value", document(crd, n.steps, func(m map[string]any, k string) { delete(m, k) }))
					expect("required field null", "Required value", document(crd, n.steps, func(m map[string]any, k string) { m[k] = nil }))
				}
				set := func(v any) map[string]any {
					return document(crd, n.steps, func(m map[string]any, k string) { m[k] = v })
				}
				switch {
				case s.IntOrString:
					expect("wrong type", "must be an integer or a string", set(map[string]any{}))
				case s.Type == "object":
					expect("wrong type", "Invalid type", set("text"))
					if len(s.Properties) > 0 {
						v := minimal(s).(map[string]any)
						v["notAField"] = "x"
						path0 := path
						path = path0 + ".notAField"
						expect("unknown field", "Unknown field", set(v))
						path = path0
					}
				case s.Type == "array":
					expect("wrong type", "Invalid type", set("text"))
					if s.MaxItems != nil {
						items := make([]any, *s.MaxItems+1)
						for i := range items {
							items[i] = minimal(s.Items)
						}
						expect("too many items", "Too many", set(items))
					}
				case s.Type == "string":
					expect("wrong type", "Invalid type", set(map[string]any{}))
					if len(s.Enum) > 0 {
						expect("value not in the enum", "Unsupported value", set("NotInTheEnum"))
						for _, b := range []string{"Off", "On", "yes", "no", "y", "n"} {
							expect("YAML 1.1 boolean "+b, "quote it", set("__BOOL__"), "__BOOL__", b)
						}
					}
					if s.MaxLength != nil {
						expect("too long", "Too long", set(strings.Repeat("a", int(*s.MaxLength)+1)))
					}
					if s.MinLength != nil && *s.MinLength > 0 {
						expect("too short", "at least", set(""))
					}
					if s.Pattern != "" {
						expect("pattern", "must match", set("-- not matching --"))
					}
				case s.Type == "integer":
					expect("wrong type", "Invalid type", set("text"))
					if s.Minimum != nil {
						expect("below the minimum", "greater than or equal", set(int(*s.Minimum)-1))
					}
					if s.Maximum != nil {
						expect("above the maximum", "less than or equal", set(int(*s.Maximum)+1))
					}
				}
			}
		})
	}
	if checked < 100 {
		t.Errorf("only %d checks: the schemas were not walked", checked)
	}
	t.Logf("%d schema constraints checked", checked)
}

// isRequired says whether the last step of steps is required by its parent.
func isRequired(root *Schema, steps []string) bool {
	s := root
	for _, step := range steps[:len(steps)-1] {
		switch step {
		case "[]":
			s = s.Items
		case "{}":
			s = s.AdditionalProperties
		default:
			s = s.Properties[step]
		}
	}
	for _, r := range s.Required {
		if r == steps[len(steps)-1] {
			return true
		}
	}
	return false
}

// TestRequiredFieldsOfTheIssue: the cases of issue 14 §A.1, spelled out.
func TestRequiredFieldsOfTheIssue(t *testing.T) {
	for name, c := range map[string]struct{ doc, field string }{
		"FirewallPolicy without podSelector":     {"apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: a, namespace: x}\nspec:\n  egress: [{action: Deny}]\n", "spec.podSelector"},
		"ClusterFirewallPolicy without subject":  {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: a}\nspec: {tier: Admin, priority: 1, egress: [{action: Deny}]}\n", "spec.subject"},
		"ClusterFirewallPolicy without priority": {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: a}\nspec: {tier: Admin, subject: {namespaceSelector: {}}, egress: [{action: Deny}]}\n", "spec.priority"},
		"FirewallPolicy without spec":            {"apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: a, namespace: x}\n", "spec"},
	} {
		objs, err := Decode("t", strings.NewReader(c.doc))
		if len(objs) != 0 || err == nil || !strings.Contains(err.Error(), c.field+": Required value") {
			t.Errorf("%s: %d objects, error %v; want %s: Required value", name, len(objs), err, c.field)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"podSelector", "egress", "ingress", "mode", "lookups", "tunnelDetection"}
	for in, want := range map[string]string{
		"podselector": "podSelector", "podSelecter": "podSelector", "egres": "egress", "ingres": "ingress",
		"tunnelDetect": "tunnelDetection", "mdoe": "mode", "spec": "", "x": "", "completelyDifferent": "",
	} {
		if got := Suggest(in, known); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
	_ = fmt.Sprint()
}
