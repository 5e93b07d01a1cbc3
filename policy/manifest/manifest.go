// Package manifest reads policy and workload files: multi-document YAML (or JSON)
// holding FirewallPolicy, ClusterFirewallPolicy, NetworkPolicy and
// ClusterNetworkPolicy (policy.networking.k8s.io) objects, and the
// standalone workloads file. Every error names the file, the document and, for
// invalid policies, the field.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	yaml "go.yaml.in/yaml/v3"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/egressd/egressd/policy"
)

// Object is one decoded policy with where it came from.
type Object struct {
	// Source is "file:document" (document counted from 1).
	Source string
	// Line is the line of the file the object starts on.
	Line int
	// lines maps field paths (spec.egress[0].to) to lines of the file.
	lines map[string]int
	// Exactly one of the following is set.
	FirewallPolicy        *policy.FirewallPolicy
	ClusterFirewallPolicy *policy.ClusterFirewallPolicy
	NetworkPolicy         *networkingv1.NetworkPolicy
	// ClusterNetworkPolicy is read from policy.networking.k8s.io/v1alpha2 or
	// v1beta1 (identical schemas) into the v1alpha2 type.
	ClusterNetworkPolicy *cnpv1alpha2.ClusterNetworkPolicy
}

// FieldLine returns the line of the file that holds the field path (as
// field.Path.String writes it), or of its nearest parent that is in the
// file; the object's line when none is.
func (o *Object) FieldLine(path string) int {
	for path != "" {
		if l, ok := o.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return o.Line
}

// Ref returns the policy reference of the object.
func (o *Object) Ref() policy.PolicyRef {
	switch {
	case o.FirewallPolicy != nil:
		return policy.PolicyRef{Kind: policy.KindFirewallPolicy, Namespace: o.FirewallPolicy.Namespace, Name: o.FirewallPolicy.Name}
	case o.ClusterFirewallPolicy != nil:
		return policy.PolicyRef{Kind: policy.KindClusterFirewallPolicy, Name: o.ClusterFirewallPolicy.Name}
	case o.NetworkPolicy != nil:
		return policy.PolicyRef{Kind: policy.KindNetworkPolicy, Namespace: o.NetworkPolicy.Namespace, Name: o.NetworkPolicy.Name}
	case o.ClusterNetworkPolicy != nil:
		return policy.PolicyRef{Kind: policy.KindClusterNetworkPolicy, Name: o.ClusterNetworkPolicy.Name}
	}
	return policy.PolicyRef{}
}

// Validate checks the object with the policy package's validation.
func (o *Object) Validate() error {
	switch {
	case o.FirewallPolicy != nil:
		return policy.ValidateFirewallPolicy(o.FirewallPolicy)
	case o.ClusterFirewallPolicy != nil:
		return policy.ValidateClusterFirewallPolicy(o.ClusterFirewallPolicy)
	case o.NetworkPolicy != nil:
		return policy.ValidateNetworkPolicy(o.NetworkPolicy)
	case o.ClusterNetworkPolicy != nil:
		return policy.ValidateClusterNetworkPolicy(o.ClusterNetworkPolicy)
	}
	return errors.New("empty object")
}

// Apply validates the object and puts it into the store.
func (o *Object) Apply(s *policy.Store) error { return o.upsertInto(s) }

// upserter is what takes a validated policy: a policy.Store or a
// policy.PolicyBatch.
type upserter interface {
	UpsertFirewallPolicy(*policy.FirewallPolicy) error
	UpsertClusterFirewallPolicy(*policy.ClusterFirewallPolicy) error
	UpsertNetworkPolicy(*networkingv1.NetworkPolicy) error
	UpsertClusterNetworkPolicy(*cnpv1alpha2.ClusterNetworkPolicy) error
}

func (o *Object) upsertInto(u upserter) error {
	switch {
	case o.FirewallPolicy != nil:
		return u.UpsertFirewallPolicy(o.FirewallPolicy)
	case o.ClusterFirewallPolicy != nil:
		return u.UpsertClusterFirewallPolicy(o.ClusterFirewallPolicy)
	case o.NetworkPolicy != nil:
		return u.UpsertNetworkPolicy(o.NetworkPolicy)
	case o.ClusterNetworkPolicy != nil:
		return u.UpsertClusterNetworkPolicy(o.ClusterNetworkPolicy)
	}
	return errors.New("empty object")
}

// Limits bound what a policy source may hold; beyond them a file or the whole
// source is refused with an error instead of being decoded (docs/policy.md,
// "Limits").
type Limits struct {
	// FileBytes bounds one policy (or workloads) file.
	FileBytes int64
	// TotalBytes bounds all the files of a policy directory together.
	TotalBytes int64
	// Objects bounds the policies of a file, and of a directory together.
	Objects int
}

// DefaultLimits are the limits of Decode, DecodePath and LoadWorkloads: 16 MiB
// per file, 64 MiB per directory, policy.MaxPolicies (20,000) policies. Ten
// thousand policies with an FQDN rule each take about 2 MiB of YAML.
var DefaultLimits = Limits{FileBytes: 16 << 20, TotalBytes: 64 << 20, Objects: policy.MaxPolicies}

// TooLargeError reports a policy source beyond its Limits; nothing of what it
// names was decoded.
type TooLargeError struct {
	// Source is the file or directory.
	Source string
	// What is "bytes" or "policies"; Count is how many were found (at least
	// Limit+1: counting stops there) and Limit the limit.
	What         string
	Count, Limit int64
}

func (e *TooLargeError) Error() string {
	found := ""
	if e.Count > e.Limit+1 {
		found = fmt.Sprintf(" (%d)", e.Count)
	}
	return fmt.Sprintf("%s: more than %d %s%s: refused, not loaded (the limits of a policy source are in docs/policy.md)", e.Source, e.Limit, e.What, found)
}

// AddTo validates the object and adds it to a batch (policy.Store.ApplyPolicies).
func (o *Object) AddTo(b *policy.PolicyBatch) error { return o.upsertInto(b) }

// Decode reads every document of r with DefaultLimits.
func Decode(source string, r io.Reader) ([]Object, error) { return DefaultLimits.Decode(source, r) }

// Decode reads every document of r. Unknown kinds, unknown fields and
// malformed documents are errors naming source and document; empty documents
// are skipped. A "List" document's items are decoded one by one. More than
// l.FileBytes bytes or l.Objects policies is a *TooLargeError and no object
// is returned.
func (l Limits) Decode(source string, r io.Reader) ([]Object, error) {
	data, err := io.ReadAll(io.LimitReader(r, l.FileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return l.decodeBytes(source, data)
}

// decodeBytes is Decode of what was read.
func (l Limits) decodeBytes(source string, data []byte) ([]Object, error) {
	if int64(len(data)) > l.FileBytes {
		return nil, &TooLargeError{Source: source, What: "bytes", Count: int64(len(data)), Limit: l.FileBytes}
	}
	var objs []Object
	var errs []error
	docs, starts := splitDocumentsLines(data)
	if err := CutShort(data); err != nil {
		// The last document lost its end: decoding it would take what is
		// left (a rule without its `to`) as the policy.
		last := len(docs)
		for last > 1 && len(bytes.TrimSpace(stripComments(docs[last-1]))) == 0 {
			last--
		}
		errs = append(errs, &Problem{Source: fmt.Sprintf("%s:%d", source, last), Line: lastLine(data), Reason: err.Error(), err: err})
		docs = docs[:last-1]
	}
	nonEmpty := 0
	for i, doc := range docs {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			docs[i] = nil
			continue
		}
		nonEmpty++
	}
	if nonEmpty > l.Objects {
		return nil, &TooLargeError{Source: source, What: "policies", Count: int64(nonEmpty), Limit: int64(l.Objects)}
	}
	for i, doc := range docs {
		if doc == nil {
			continue
		}
		o, err := decodeDocument(fmt.Sprintf("%s:%d", source, i+1), doc, starts[i]-1)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o...)
		if len(objs) > l.Objects { // List documents hold several
			return nil, &TooLargeError{Source: source, What: "policies", Count: int64(len(objs)), Limit: int64(l.Objects)}
		}
	}
	return objs, errors.Join(errs...)
}

// lastLine is the number of the last non-empty line of data.
func lastLine(data []byte) int {
	lines := bytes.Split(bytes.TrimRight(data, " \t\r\n"), []byte("\n"))
	return len(lines)
}

// yamlLineRE finds the line numbers of go-yaml's syntax errors ("yaml: line
// 3: ..."), which count from the start of the document.
var yamlLineRE = regexp.MustCompile(`\bline (\d+)\b`)

// syntaxProblem turns a YAML syntax error of a document into a problem whose
// line numbers are the file's.
func syntaxProblem(src string, err error, lineOffset int) *Problem {
	p := &Problem{Source: src, err: err}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = yamlLineRE.ReplaceAllStringFunc(msg, func(m string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
		if p.Line == 0 {
			p.Line = n + lineOffset
		}
		return fmt.Sprintf("line %d", n+lineOffset)
	})
	p.Reason = "not valid YAML: " + policy.Truncate(msg)
	return p
}

// decodeDocument decodes one document of a file; lineOffset is the number of
// the file's lines before it.
func decodeDocument(src string, doc []byte, lineOffset int) ([]Object, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, syntaxProblem(src, err, lineOffset)
	}
	return decodeNode(src, resolve(&root), lineOffset)
}

// scalarAt returns the scalar value of key in a mapping node.
func scalarAt(n *yaml.Node, key string) (string, *yaml.Node) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return "", nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := resolve(n.Content[i+1])
			if v.Kind == yaml.ScalarNode {
				return v.Value, v
			}
			return "", v
		}
	}
	return "", nil
}

// foreignKinds maps API groups egressd does not read to what to do instead.
var foreignKinds = map[string]string{
	"projectcalico.org":     "a Calico policy: egressd does not read it; translate it with `egressctl convert -f FILE` (docs/egressctl.md)",
	"crd.projectcalico.org": "a Calico policy: egressd does not read it; translate it with `egressctl convert -f FILE` (docs/egressctl.md)",
	"cilium.io":             "a Cilium policy: egressd does not read it; write it as a FirewallPolicy or ClusterFirewallPolicy (docs/policy.md)",
}

func decodeNode(src string, n *yaml.Node, lineOffset int) ([]Object, error) {
	line := func(n *yaml.Node) int {
		if n == nil || n.Line == 0 {
			return 0
		}
		return n.Line + lineOffset
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, &Problem{Source: src, Line: line(n), Reason: "not a YAML/JSON object (a policy is a mapping with apiVersion, kind, metadata and spec)"}
	}
	apiVersion, _ := scalarAt(n, "apiVersion")
	kind, _ := scalarAt(n, "kind")
	meta := metaOf(n)
	object := ""
	if kind != "" {
		object = policy.PolicyRef{Kind: policy.Truncate(kind), Namespace: policy.Truncate(meta.ns), Name: policy.Truncate(meta.name)}.String()
	}
	fail := func(reason string) error {
		return &Problem{Source: src, Line: line(n), Object: object, Reason: reason}
	}
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}
	switch {
	case kind == "List" || strings.HasSuffix(kind, "List"):
		_, items := scalarAt(n, "items")
		if items == nil || isNull(items) {
			return nil, nil
		}
		if items.Kind != yaml.SequenceNode {
			return nil, &Problem{Source: src, Line: line(items), Object: object, Field: "items", Reason: "Invalid type: must be an array"}
		}
		var out []Object
		var errs []error
		for j, item := range items.Content {
			o, err := decodeNode(fmt.Sprintf("%s/items[%d]", src, j), resolve(item), lineOffset)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, o...)
		}
		return out, errors.Join(errs...)
	case kind == "" || apiVersion == "":
		if _, pods := scalarAt(n, "pods"); pods != nil {
			return nil, fail("apiVersion and kind are required (this looks like a workloads file: pass it with --workloads, not -f)")
		}
		if _, nss := scalarAt(n, "namespaces"); nss != nil {
			return nil, fail("apiVersion and kind are required (this looks like a workloads file: pass it with --workloads, not -f)")
		}
		return nil, fail("apiVersion and kind are required")
	case foreignKinds[group] != "":
		return nil, fail(fmt.Sprintf("%s/%s is %s", policy.Truncate(apiVersion), policy.Truncate(kind), foreignKinds[group]))
	}
	if schema := schemaFor(apiVersion, kind); schema != nil {
		c := &schemaCheck{kind: kind, lineOffset: lineOffset}
		c.check(n, schema, nil)
		if len(c.errs) > 0 {
			errs := make([]error, 0, len(c.errs))
			reported := map[string]bool{}
			for _, p := range c.errs {
				p.Source, p.Object = src, object
				errs = append(errs, p)
				reported[p.Field] = true
			}
			// Report the policy package's problems as well, when the
			// document decodes: every problem, in one pass.
			for _, p := range validationProblems(src, object, n, lineOffset, apiVersion, kind) {
				if !reportedWithin(reported, p.Field) {
					errs = append(errs, p)
				}
			}
			return nil, errors.Join(errs...)
		}
	}
	strict := func(into any) error {
		if err := decodeStrict(n, into); err != nil {
			return &Problem{Source: src, Line: line(n), Object: object, Reason: policy.Truncate(cleanJSONError(err.Error())), err: err}
		}
		return nil
	}
	lines := fieldLines(n, lineOffset)
	switch {
	case kind == policy.KindFirewallPolicy && apiVersion == policy.APIVersion:
		var p policy.FirewallPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, Line: line(n), lines: lines, FirewallPolicy: &p}}, nil
	case kind == policy.KindClusterFirewallPolicy && apiVersion == policy.APIVersion:
		var p policy.ClusterFirewallPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, Line: line(n), lines: lines, ClusterFirewallPolicy: &p}}, nil
	case kind == policy.KindNetworkPolicy && apiVersion == "networking.k8s.io/v1":
		var p networkingv1.NetworkPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, Line: line(n), lines: lines, NetworkPolicy: &p}}, nil
	case kind == policy.KindClusterNetworkPolicy && slices.Contains(policy.CNPAPIVersions, apiVersion):
		var p cnpv1alpha2.ClusterNetworkPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, Line: line(n), lines: lines, ClusterNetworkPolicy: &p}}, nil
	}
	return nil, fail(fmt.Sprintf("unsupported kind %s/%s (want %s FirewallPolicy or ClusterFirewallPolicy, networking.k8s.io/v1 NetworkPolicy, or %s ClusterNetworkPolicy)", policy.Truncate(apiVersion), policy.Truncate(kind), policy.APIVersion, strings.Join(policy.CNPAPIVersions, " or ")))
}

// networkPolicySchema is NetworkPolicy's schema, from its Go type (the API
// server validates a NetworkPolicy in Go, not with a schema).
var networkPolicySchema = sync.OnceValue(func() *Schema { return schemaOf(reflect.TypeFor[networkingv1.NetworkPolicy]()) })

// schemaFor returns the schema file mode checks a document of apiVersion and
// kind against before decoding it: the CRD's for the kinds of deploy/crds,
// the Go type's for NetworkPolicy; nil for other kinds.
func schemaFor(apiVersion, kind string) *Schema {
	if crd := crdFor(apiVersion, kind); crd != nil {
		return crd.Schema
	}
	if kind == policy.KindNetworkPolicy && apiVersion == "networking.k8s.io/v1" {
		return networkPolicySchema()
	}
	if kind == policy.KindClusterNetworkPolicy && slices.Contains(policy.CNPAPIVersions, apiVersion) {
		return clusterNetworkPolicySchema()
	}
	return nil
}

// clusterNetworkPolicySchema is ClusterNetworkPolicy's schema from its Go
// type, until its CRD is in deploy/crds (then the CRD's is used).
var clusterNetworkPolicySchema = sync.OnceValue(func() *Schema {
	return schemaOf(reflect.TypeFor[cnpv1alpha2.ClusterNetworkPolicy]())
})

// validationProblems decodes n leniently as its kind and returns the
// problems of the policy package's validation, each with its line; nil when
// n does not decode.
func validationProblems(src, object string, n *yaml.Node, lineOffset int, apiVersion, kind string) []*Problem {
	var o Object
	switch {
	case kind == policy.KindFirewallPolicy && apiVersion == policy.APIVersion:
		o.FirewallPolicy = &policy.FirewallPolicy{}
		if decodeLenient(n, o.FirewallPolicy) != nil {
			return nil
		}
	case kind == policy.KindClusterFirewallPolicy && apiVersion == policy.APIVersion:
		o.ClusterFirewallPolicy = &policy.ClusterFirewallPolicy{}
		if decodeLenient(n, o.ClusterFirewallPolicy) != nil {
			return nil
		}
	case kind == policy.KindNetworkPolicy && apiVersion == "networking.k8s.io/v1":
		o.NetworkPolicy = &networkingv1.NetworkPolicy{}
		if decodeLenient(n, o.NetworkPolicy) != nil {
			return nil
		}
	case kind == policy.KindClusterNetworkPolicy && slices.Contains(policy.CNPAPIVersions, apiVersion):
		o.ClusterNetworkPolicy = &cnpv1alpha2.ClusterNetworkPolicy{}
		if decodeLenient(n, o.ClusterNetworkPolicy) != nil {
			return nil
		}
	default:
		return nil
	}
	o.Source, o.lines = src, fieldLines(n, lineOffset)
	var ve *policy.ValidationError
	if err := o.Validate(); !errors.As(err, &ve) {
		return nil
	}
	out := make([]*Problem, 0, len(ve.Errs))
	for _, fe := range ve.Errs {
		out = append(out, &Problem{Source: src, Line: o.FieldLine(fe.Field), Object: object, Field: policy.Truncate(fe.Field), Reason: fe.ErrorBody()})
	}
	return out
}

// decodeLenient decodes n into v, dropping what does not fit (values of the
// wrong type, unknown fields): best effort, for more problems to report.
func decodeLenient(n *yaml.Node, v any) error {
	var generic any
	if err := n.Decode(&generic); err != nil {
		return err
	}
	generic = pruneMismatches(generic, schemaOfValue(v))
	return decodeGeneric(generic, v, false)
}

// schemaOfValue is the schema of a pointer's element type.
func schemaOfValue(v any) *Schema { return schemaOf(reflect.TypeOf(v)) }

// pruneMismatches drops the values of v whose JSON type the schema does not
// accept, so that a lenient decode keeps the rest.
func pruneMismatches(v any, s *Schema) any {
	if s == nil || s.PreserveUnknown {
		return v
	}
	switch t := v.(type) {
	case map[string]any:
		if s.Type != "object" {
			return nil
		}
		for k, e := range t {
			sub := s.Properties[k]
			if sub == nil {
				sub = s.AdditionalProperties
			}
			if sub == nil {
				delete(t, k)
				continue
			}
			if e = pruneMismatches(e, sub); e == nil {
				delete(t, k)
			} else {
				t[k] = e
			}
		}
		return t
	case []any:
		if s.Type != "array" {
			return nil
		}
		out := t[:0]
		for _, e := range t {
			if e = pruneMismatches(e, s.Items); e != nil {
				out = append(out, e)
			}
		}
		return out
	case string:
		if s.Type == "string" || s.IntOrString {
			return t
		}
	case bool:
		if s.Type == "boolean" {
			return t
		}
	case int, int64, uint64:
		if s.Type == "integer" || s.Type == "number" || s.IntOrString {
			return t
		}
	case float64:
		if s.Type == "number" {
			return t
		}
	case map[any]any:
		return nil
	}
	return nil
}

// reportedWithin says whether a problem was reported on path or on a field
// that holds it or that it holds.
func reportedWithin(reported map[string]bool, path string) bool {
	for f := range reported {
		if f == path || strings.HasPrefix(path, f+".") || strings.HasPrefix(path, f+"[") ||
			strings.HasPrefix(f, path+".") || strings.HasPrefix(f, path+"[") {
			return true
		}
	}
	return false
}

type objectMeta struct{ name, ns string }

func metaOf(n *yaml.Node) objectMeta {
	_, m := scalarAt(n, "metadata")
	name, _ := scalarAt(m, "name")
	ns, _ := scalarAt(m, "namespace")
	return objectMeta{name: name, ns: ns}
}

// decodeStrict decodes a YAML node into v through its JSON form (the json
// tags of the API types apply); unknown fields are errors.
func decodeStrict(n *yaml.Node, v any) error {
	var generic any
	if err := n.Decode(&generic); err != nil {
		return err
	}
	return decodeGeneric(generic, v, true)
}

var jsonNoise = strings.NewReplacer("error unmarshaling JSON: ", "", "while decoding JSON: ", "", "json: ", "")

// cleanJSONError drops encoding/json's prefixes.
func cleanJSONError(s string) string { return jsonNoise.Replace(s) }

// fieldLines maps the field path of every node below n to its line in the file.
func fieldLines(n *yaml.Node, lineOffset int) map[string]int {
	out := map[string]int{}
	var walk func(n *yaml.Node, path *field.Path, depth int)
	walk = func(n *yaml.Node, path *field.Path, depth int) {
		n = resolve(n)
		if n == nil || depth > 64 {
			return
		}
		if path != nil {
			if _, ok := out[path.String()]; !ok { // a key's own line comes first
				out[path.String()] = n.Line + lineOffset
			}
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				child := field.NewPath(k.Value)
				if path != nil {
					child = path.Child(k.Value)
				}
				out[child.String()] = k.Line + lineOffset
				v := resolve(n.Content[i+1])
				if v != nil && (v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode) {
					walk(v, child, depth+1)
				}
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				if path != nil {
					walk(item, path.Index(i), depth+1)
				}
			}
		}
	}
	walk(n, nil, 0)
	return out
}

// SplitDocuments splits YAML at "---" separator lines; Decode numbers
// documents in this order, from 1.
func SplitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

// ErrCutShort is the error of a document whose last line is a mapping key
// without a value or an empty sequence item.
var ErrCutShort = errors.New("the document ends with a key without a value: cut mid-document (a partial write?); write an explicit value such as [] or {}")

// CutShort returns an error wrapping ErrCutShort when the last content line of
// data (comments and blank lines aside) is a mapping key without a value
// ("to:") or an empty sequence item ("-"): what a write cut mid-document
// leaves behind, never what a writer means. Decoded, such a document would be
// what is left of the policy (an Allow rule whose `to` was cut off allows
// every destination).
func CutShort(data []byte) error {
	lines := bytes.Split(data, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		line := bytes.TrimSpace(lines[i])
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if j := bytes.Index(line, []byte(" #")); j >= 0 {
			line = bytes.TrimSpace(line[:j])
		}
		if bytes.Equal(line, []byte("---")) || bytes.HasPrefix(line, []byte("--- ")) {
			continue // an empty last document
		}
		if line[len(line)-1] == ':' || bytes.Equal(line, []byte("-")) {
			return fmt.Errorf("%w (last line %q)", ErrCutShort, clipLine(line))
		}
		return nil
	}
	return nil
}

func clipLine(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
	}
	return out
}

// DecodeFile reads one file with DefaultLimits.
func DecodeFile(path string) ([]Object, error) { return DefaultLimits.DecodeFile(path) }

// DecodeFile reads one file.
func (l Limits) DecodeFile(path string) ([]Object, error) {
	data, err := l.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return l.decodeBytes(path, data)
}

// Files lists the files DecodePath reads for path: the file itself, or every
// .yaml/.yml/.json file of a directory tree in lexical order.
func Files(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

// CheckFiles returns a *TooLargeError when the files of the policy source
// path together hold more than l.TotalBytes bytes (by their sizes; nothing is
// read).
func (l Limits) CheckFiles(path string, files []string) error {
	var total int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			total += st.Size()
		}
	}
	if total > l.TotalBytes {
		return &TooLargeError{Source: path, What: "bytes", Count: total, Limit: l.TotalBytes}
	}
	return nil
}

// DecodePath reads a file, or every .yaml/.yml/.json file of a directory tree
// in lexical order, with DefaultLimits.
func DecodePath(path string) ([]Object, error) { return DefaultLimits.DecodePath(path) }

// DecodePath reads a file, or every .yaml/.yml/.json file of a directory tree
// in lexical order. A file beyond the limits is refused (an error, its
// objects missing from the result); when the files together hold more than
// l.TotalBytes bytes or l.Objects policies, the whole source is refused: no
// object is returned, and the error is a *TooLargeError.
func (l Limits) DecodePath(path string) ([]Object, error) {
	files, err := Files(path)
	if err != nil {
		return nil, err
	}
	if err := l.CheckFiles(path, files); err != nil {
		return nil, err
	}
	var objs []Object
	var errs []error
	for _, f := range files {
		o, err := l.DecodeFile(f)
		objs = append(objs, o...)
		if err != nil {
			errs = append(errs, err)
		}
		if len(objs) > l.Objects {
			return nil, &TooLargeError{Source: path, What: "policies", Count: int64(len(objs)), Limit: int64(l.Objects)}
		}
	}
	return objs, errors.Join(errs...)
}

// LoadWorkloads reads a workloads file (docs/design.md §3); a file of more than
// DefaultLimits.FileBytes bytes is refused with a *TooLargeError.
func LoadWorkloads(path string) (*policy.Workloads, error) {
	data, err := DefaultLimits.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return DecodeWorkloads(path, data)
}

// ReadFile reads a file of at most l.FileBytes bytes; a larger one is a
// *TooLargeError (nothing beyond the limit is read). Errors of the file
// system are returned as they are (fs.ErrNotExist stays recognizable).
func (l Limits) ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > l.FileBytes {
		return nil, &TooLargeError{Source: path, What: "bytes", Count: st.Size(), Limit: l.FileBytes}
	}
	data, err := io.ReadAll(io.LimitReader(f, l.FileBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > l.FileBytes {
		return nil, &TooLargeError{Source: path, What: "bytes", Count: int64(len(data)), Limit: l.FileBytes}
	}
	return data, nil
}

// workloadsSchema is the schema of the workloads file: policy.Workloads's
// fields and types. Entries without a name are the store's to refuse one by
// one (a partial write keeps the valid ones, source/file).
var workloadsSchema = sync.OnceValue(func() *Schema { return schemaOf(reflect.TypeFor[policy.Workloads]()) })

// DecodeWorkloads decodes a workloads document. Every problem is reported, as
// a *Problem naming the pod (or namespace) and the line; a policy file is
// recognized and named as such.
func DecodeWorkloads(source string, data []byte) (*policy.Workloads, error) {
	if err := CutShort(data); err != nil {
		return nil, &Problem{Source: source, Line: lastLine(data), Reason: err.Error(), err: err}
	}
	docs, starts := splitDocumentsLines(data)
	var root *yaml.Node
	for i, doc := range docs {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var n yaml.Node
		if err := yaml.Unmarshal(doc, &n); err != nil {
			return nil, syntaxProblem(source, err, starts[i]-1)
		}
		r := resolve(&n)
		if kind, _ := scalarAt(r, "kind"); kind != "" {
			apiVersion, _ := scalarAt(r, "apiVersion")
			return nil, &Problem{Source: source, Line: starts[i], Reason: fmt.Sprintf(
				"this is a policy file (document %d is a %s %s), not a workloads file: pass policies with -f and the namespaces and pods with --workloads",
				i+1, policy.Truncate(apiVersion), policy.Truncate(kind))}
		}
		if root != nil {
			return nil, &Problem{Source: source, Line: starts[i], Reason: "a workloads file is one document (namespaces and pods); this one has more"}
		}
		root = r
		var ws policy.Workloads
		if p := checkWorkloads(source, root, starts[i]-1); p != nil {
			return nil, p
		}
		if err := decodeStrict(root, &ws); err != nil {
			return nil, &Problem{Source: source, Line: starts[i], Reason: policy.Truncate(cleanJSONError(err.Error())), err: err}
		}
		return &ws, nil
	}
	return &policy.Workloads{}, nil
}

// checkWorkloads checks a workloads document against workloadsSchema, and
// every address; nil when valid.
func checkWorkloads(source string, root *yaml.Node, lineOffset int) error {
	if root.Kind != yaml.MappingNode {
		return &Problem{Source: source, Line: root.Line + lineOffset, Reason: "not a workloads file: want a mapping with namespaces and pods"}
	}
	c := &schemaCheck{kind: "the workloads file", lineOffset: lineOffset}
	c.check(root, workloadsSchema(), nil)
	_, pods := scalarAt(root, "pods")
	podName := func(i int) string {
		if pods == nil || pods.Kind != yaml.SequenceNode || i >= len(pods.Content) {
			return ""
		}
		ns, _ := scalarAt(pods.Content[i], "namespace")
		name, _ := scalarAt(pods.Content[i], "name")
		return "pod " + policy.Truncate(ns) + "/" + policy.Truncate(name)
	}
	if pods != nil && pods.Kind == yaml.SequenceNode {
		owner := map[netip.Addr]string{}
		for i, pod := range pods.Content {
			_, ips := scalarAt(pod, "ips")
			if ips == nil || ips.Kind != yaml.SequenceNode {
				continue
			}
			for j, ipn := range ips.Content {
				ipn = resolve(ipn)
				if ipn.Kind != yaml.ScalarNode || nodeType(ipn) != "string" {
					continue // a type error, reported above
				}
				path := field.NewPath("pods").Index(i).Child("ips").Index(j)
				ip, err := netip.ParseAddr(ipn.Value)
				if err != nil {
					c.addField(ipn, field.Invalid(path, policy.Truncate(ipn.Value), "not an IP address"))
					continue
				}
				ip = ip.Unmap()
				if other, dup := owner[ip]; dup {
					c.addField(ipn, field.Duplicate(path, fmt.Sprintf("%s (also an address of %s)", ip, other)))
					continue
				}
				owner[ip] = podName(i)
			}
		}
	}
	if len(c.errs) == 0 {
		return nil
	}
	errs := make([]error, len(c.errs))
	for i, p := range c.errs {
		p.Source = source
		var idx int
		if _, err := fmt.Sscanf(p.Field, "pods[%d]", &idx); err == nil {
			p.Object = podName(idx)
		} else if _, err := fmt.Sscanf(p.Field, "namespaces[%d]", &idx); err == nil {
			if _, n := scalarAt(root, "namespaces"); n != nil && n.Kind == yaml.SequenceNode && idx < len(n.Content) {
				name, _ := scalarAt(n.Content[idx], "name")
				p.Object = "namespace " + policy.Truncate(name)
			}
		}
		errs[i] = p
	}
	return errors.Join(errs...)
}

// LoadStore builds a store from policy objects and workloads; the first error
// of each object is returned joined, and valid objects are still loaded.
func LoadStore(objs []Object, ws *policy.Workloads) (*policy.Store, error) {
	s := policy.NewStore()
	var errs []error
	if ws != nil {
		if err := s.LoadWorkloads(ws); err != nil {
			errs = append(errs, err)
		}
	}
	for i := range objs {
		if err := objs[i].Apply(s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", objs[i].Source, err))
		}
	}
	return s, errors.Join(errs...)
}
