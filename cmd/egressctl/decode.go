package main

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// decodeProblems turns the (joined) error of manifest.DecodeFile into problems.
// manifest names each failing document "file:N" (or "file:N/items[i]" inside a
// List); the document is read again here, leniently, to name the object and to
// give the full path of every unknown field (the strict decoder stops at the
// first one and names it without its path).
func decodeProblems(file string, err error) []problem {
	data, readErr := os.ReadFile(file)
	if readErr != nil {
		return []problem{{Source: file, Reason: pathError(readErr)}}
	}
	docs := manifest.SplitDocuments(data)
	var out []problem
	for _, leaf := range leaves(err) {
		msg := leaf.Error()
		rest, ok := strings.CutPrefix(msg, file+":")
		if !ok {
			out = append(out, problem{Source: file, Reason: pathError(leaf)})
			continue
		}
		loc, reason, _ := strings.Cut(rest, ": ")
		p := problem{Source: file + ":" + loc, Reason: reason}
		obj, kind := documentAt(docs, loc)
		if obj != nil {
			p.Object = objectName(obj, kind)
		}
		p.Reason = cleanReason(strings.TrimPrefix(p.Reason, kind+": "))
		if unknown := unknownFieldsOf(obj, kind); len(unknown) > 0 && strings.Contains(reason, "unknown field") {
			for _, f := range unknown {
				q := p
				q.Field = f
				q.Reason = "Unknown field: not part of " + kind
				out = append(out, q)
			}
			continue
		}
		if obj != nil && kind == "" && (obj["pods"] != nil || obj["namespaces"] != nil) {
			p.Reason += " (this looks like a workloads file: pass it with --workloads, not -f)"
		}
		if f := typeErrorField(reason); f != "" {
			p.Field = f
		}
		out = append(out, p)
	}
	return out
}

// leaves flattens errors.Join trees.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

var (
	reasonNoise = strings.NewReplacer("error unmarshaling JSON: ", "", "while decoding JSON: ", "", "json: ", "")
	// "cannot unmarshal string into Go struct field FirewallPolicySpec.spec.egress.ports.port of type int32"
	typeErrorRE = regexp.MustCompile(`Go struct field [A-Za-z0-9_]+\.(\S+) of type`)
)

func cleanReason(r string) string { return reasonNoise.Replace(r) }

// typeErrorField returns the field path of a JSON type error (without list
// indices, which encoding/json does not report).
func typeErrorField(reason string) string {
	if m := typeErrorRE.FindStringSubmatch(reason); m != nil {
		return m[1]
	}
	return ""
}

// documentAt returns the generic form of document loc ("N" or "N/items[i]...")
// and its kind; nil when it cannot be read.
func documentAt(docs [][]byte, loc string) (map[string]any, string) {
	parts := strings.Split(loc, "/")
	n, err := strconv.Atoi(parts[0])
	if err != nil || n < 1 || n > len(docs) {
		return nil, ""
	}
	var obj map[string]any
	if err := manifest.Unmarshal(docs[n-1], &obj, false); err != nil {
		return nil, ""
	}
	for _, p := range parts[1:] {
		i, err := parseItemsIndex(p)
		if err != nil {
			return nil, ""
		}
		items, _ := obj["items"].([]any)
		if i < 0 || i >= len(items) {
			return nil, ""
		}
		if obj, _ = items[i].(map[string]any); obj == nil {
			return nil, ""
		}
	}
	kind, _ := obj["kind"].(string)
	return obj, kind
}

// parseItemsIndex parses "items[i]".
func parseItemsIndex(s string) (int, error) {
	v, ok := strings.CutPrefix(s, "items[")
	if !ok {
		return 0, errors.New("not items")
	}
	return strconv.Atoi(strings.TrimSuffix(v, "]"))
}

// objectName names a generic object like policy.PolicyRef.String().
func objectName(obj map[string]any, kind string) string {
	if kind == "" {
		return ""
	}
	meta, _ := obj["metadata"].(map[string]any)
	ns, _ := meta["namespace"].(string)
	name, _ := meta["name"].(string)
	return policy.PolicyRef{Kind: kind, Namespace: ns, Name: name}.String()
}

// unknownFieldsOf returns the path of every field of obj that its kind does not have.
func unknownFieldsOf(obj map[string]any, kind string) []string {
	var t reflect.Type
	switch kind {
	case policy.KindFirewallPolicy:
		t = reflect.TypeFor[policy.FirewallPolicy]()
	case policy.KindClusterFirewallPolicy:
		t = reflect.TypeFor[policy.ClusterFirewallPolicy]()
	case policy.KindNetworkPolicy:
		t = reflect.TypeFor[networkingv1.NetworkPolicy]()
	case policy.KindClusterNetworkPolicy:
		t = reflect.TypeFor[cnpv1alpha2.ClusterNetworkPolicy]()
	default:
		return nil
	}
	var out []string
	unknownFields(obj, t, nil, &out)
	return out
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

func unknownFields(v any, t reflect.Type, path *field.Path, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return // decodes itself (intstr, Time, Quantity)
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := lookupField(fields, k)
			if !ok {
				*out = append(*out, childPath(path, k))
				continue
			}
			unknownFields(m[k], ft, path.Child(k), out)
		}
	case reflect.Slice:
		arr, _ := v.([]any)
		for i := range arr {
			unknownFields(arr[i], t.Elem(), path.Index(i), out)
		}
	case reflect.Map:
		m, _ := v.(map[string]any)
		for k, e := range m {
			unknownFields(e, t.Elem(), path.Key(k), out)
		}
	}
}

func childPath(path *field.Path, k string) string {
	if path == nil {
		return field.NewPath(k).String()
	}
	return path.Child(k).String()
}

// lookupField matches like encoding/json: exact name first, then case-insensitive.
func lookupField(fields map[string]reflect.Type, k string) (reflect.Type, bool) {
	if t, ok := fields[k]; ok {
		return t, true
	}
	for name, t := range fields {
		if strings.EqualFold(name, k) {
			return t, true
		}
	}
	return nil, false
}

// jsonFields maps the JSON names of a struct's fields to their types,
// flattening embedded structs without a name (",inline").
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
