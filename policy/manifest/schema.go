package manifest

import (
	"fmt"
	"io/fs"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/egressd/egressd/deploy/crds"
)

// Schema is one node of a CRD's openAPIV3Schema: the structural subset the
// API server checks before its CEL rules (types, required fields, enums,
// bounds, patterns, unknown fields). The CEL rules (x-kubernetes-validations)
// are the policy package's validation (policy.ValidateFirewallPolicy and
// friends), which file mode runs after this.
type Schema struct {
	Type                 string             `json:"type,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	AdditionalProperties *Schema            `json:"additionalProperties,omitempty"`
	Required             []string           `json:"required,omitempty"`
	Enum                 []any              `json:"enum,omitempty"`
	Minimum              *float64           `json:"minimum,omitempty"`
	Maximum              *float64           `json:"maximum,omitempty"`
	ExclusiveMinimum     bool               `json:"exclusiveMinimum,omitempty"`
	ExclusiveMaximum     bool               `json:"exclusiveMaximum,omitempty"`
	MinLength            *int64             `json:"minLength,omitempty"`
	MaxLength            *int64             `json:"maxLength,omitempty"`
	MinItems             *int64             `json:"minItems,omitempty"`
	MaxItems             *int64             `json:"maxItems,omitempty"`
	MinProperties        *int64             `json:"minProperties,omitempty"`
	MaxProperties        *int64             `json:"maxProperties,omitempty"`
	Pattern              string             `json:"pattern,omitempty"`
	Format               string             `json:"format,omitempty"`
	Nullable             bool               `json:"nullable,omitempty"`
	AnyOf                []*Schema          `json:"anyOf,omitempty"`
	IntOrString          bool               `json:"x-kubernetes-int-or-string,omitempty"`
	PreserveUnknown      bool               `json:"x-kubernetes-preserve-unknown-fields,omitempty"`
	ListType             string             `json:"x-kubernetes-list-type,omitempty"`
	ListMapKeys          []string           `json:"x-kubernetes-list-map-keys,omitempty"`

	pattern *regexp.Regexp
}

// SchemaKeywords are the openAPIV3Schema keywords Schema knows: the ones it
// checks and the ones it knowingly leaves to others (descriptions, printer
// hints, CEL rules checked by the policy package, defaults). A CRD using any
// other keyword fails TestCRDSchemaKeywordsAreKnown, so that the file-mode
// check cannot silently fall behind the API server's.
var SchemaKeywords = map[string]bool{
	"type": true, "properties": true, "items": true, "additionalProperties": true,
	"required": true, "enum": true, "minimum": true, "maximum": true,
	"exclusiveMinimum": true, "exclusiveMaximum": true, "minLength": true,
	"maxLength": true, "minItems": true, "maxItems": true, "minProperties": true,
	"maxProperties": true, "pattern": true, "format": true, "nullable": true,
	"anyOf": true, "x-kubernetes-int-or-string": true,
	"x-kubernetes-preserve-unknown-fields": true, "x-kubernetes-list-type": true,
	"x-kubernetes-list-map-keys": true,
	// Not checked here:
	"description": true, "title": true, "example": true, "default": true,
	"x-kubernetes-map-type":          true, // atomic vs granular: server-side apply only
	"x-kubernetes-validations":       true, // CEL: the policy package's validation
	"x-kubernetes-embedded-resource": true,
}

// CRD is the schema of one kind of deploy/crds.
type CRD struct {
	Group, Version, Kind string
	// Namespaced is the CRD's scope.
	Namespaced bool
	Schema     *Schema
	// File is the CRD's file name in deploy/crds.
	File string
}

// APIVersion is group/version.
func (c *CRD) APIVersion() string { return c.Group + "/" + c.Version }

// crdDoc is the part of a CustomResourceDefinition read here.
type crdDoc struct {
	Kind string `json:"kind"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Scope    string `json:"scope"`
		Versions []struct {
			Name   string `json:"name"`
			Served bool   `json:"served"`
			Schema struct {
				OpenAPIV3Schema *Schema `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// CRDs returns the schemas of every served version of every CRD of
// deploy/crds (embedded in the binary), sorted by file, then version.
var CRDs = sync.OnceValues(func() ([]*CRD, error) { return loadCRDs(crds.FS) })

func loadCRDs(fsys fs.FS) ([]*CRD, error) {
	files, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []*CRD
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		for _, doc := range SplitDocuments(data) {
			if len(strings.TrimSpace(string(stripComments(doc)))) == 0 {
				continue
			}
			var d crdDoc
			if err := Unmarshal(doc, &d, false); err != nil {
				return nil, fmt.Errorf("deploy/crds/%s: %w", f, err)
			}
			if d.Kind != "CustomResourceDefinition" {
				continue
			}
			for _, v := range d.Spec.Versions {
				if !v.Served || v.Schema.OpenAPIV3Schema == nil {
					continue
				}
				if err := v.Schema.OpenAPIV3Schema.compile(); err != nil {
					return nil, fmt.Errorf("deploy/crds/%s: %s: %w", f, v.Name, err)
				}
				out = append(out, &CRD{Group: d.Spec.Group, Version: v.Name, Kind: d.Spec.Names.Kind,
					Namespaced: d.Spec.Scope == "Namespaced", Schema: v.Schema.OpenAPIV3Schema, File: f})
			}
		}
	}
	return out, nil
}

// compile prepares the patterns of s and below.
func (s *Schema) compile() error {
	if s == nil {
		return nil
	}
	if s.Pattern != "" {
		re, err := regexp.Compile(s.Pattern)
		if err != nil {
			return fmt.Errorf("pattern %q: %w", s.Pattern, err)
		}
		s.pattern = re
	}
	for _, c := range s.children() {
		if err := c.compile(); err != nil {
			return err
		}
	}
	return nil
}

func (s *Schema) children() []*Schema {
	out := []*Schema{s.Items, s.AdditionalProperties}
	for _, p := range s.Properties {
		out = append(out, p)
	}
	return append(out, s.AnyOf...)
}

// crdFor returns the CRD of apiVersion and kind; nil when deploy/crds has none.
func crdFor(apiVersion, kind string) *CRD {
	all, err := CRDs()
	if err != nil {
		return nil // TestCRDsLoad fails on this
	}
	for _, c := range all {
		if c.Kind == kind && c.APIVersion() == apiVersion {
			return c
		}
	}
	return nil
}

// objectMetaFields are the JSON names of metav1.ObjectMeta: a CRD's schema
// says only `metadata: {type: object}`, the API server checks it as ObjectMeta.
var objectMetaFields = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[metav1.ObjectMeta]()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
})

// schemaCheck walks one YAML document against a schema and collects every
// problem, each with its field path and the line of the file it is on.
type schemaCheck struct {
	kind string
	// lineOffset is the number of file lines before the document.
	lineOffset int
	errs       []*Problem
}

func (c *schemaCheck) add(n *yaml.Node, path *field.Path, reason string) {
	p := &Problem{Reason: reason}
	if path != nil {
		p.Field = policyTruncate(path.String())
	}
	if n != nil && n.Line > 0 {
		p.Line = n.Line + c.lineOffset
	}
	c.errs = append(c.errs, p)
}

func (c *schemaCheck) addField(n *yaml.Node, fe *field.Error) {
	p := &Problem{Field: policyTruncate(fe.Field), Reason: fe.ErrorBody()}
	if n != nil && n.Line > 0 {
		p.Line = n.Line + c.lineOffset
	}
	c.errs = append(c.errs, p)
}

// yaml11Bools are the plain scalars that YAML 1.1 (kubectl, and the API
// server's YAML decoding) reads as booleans while YAML 1.2 (this package)
// reads them as strings, true and false aside (booleans in both).
var yaml11Bools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true,
	"n": true, "N": true, "no": true, "No": true, "NO": true,
	"on": true, "On": true, "ON": true, "off": true, "Off": true, "OFF": true,
}

// nodeType names the JSON type of a resolved YAML node.
func nodeType(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "array"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool":
			return "boolean"
		case "!!int":
			return "integer"
		case "!!float":
			return "number"
		case "!!str", "!!timestamp", "!!binary":
			return "string"
		}
	}
	return "unknown"
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return resolve(n.Content[0])
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// check walks n (already resolved) against s.
func (c *schemaCheck) check(n *yaml.Node, s *Schema, path *field.Path) {
	n = resolve(n)
	if n == nil || s == nil {
		return
	}
	if isNull(n) {
		// The API server prunes a null of a field that is not nullable;
		// a required one is then missing (reported by the parent).
		return
	}
	if s.IntOrString {
		switch t := nodeType(n); t {
		case "integer", "string":
			c.checkEnum(n, s, path)
		default:
			c.addField(n, field.Invalid(path, short(n), fmt.Sprintf("must be an integer or a string, not %s", article(t))))
		}
		return
	}
	if s.Type == "" && len(s.AnyOf) > 0 {
		for _, alt := range s.AnyOf {
			sub := &schemaCheck{kind: c.kind, lineOffset: c.lineOffset}
			sub.check(n, alt, path)
			if len(sub.errs) == 0 {
				return
			}
		}
		c.addField(n, field.Invalid(path, short(n), "matches none of the allowed schemas"))
		return
	}
	got := nodeType(n)
	switch s.Type {
	case "object":
		if got != "object" {
			c.typeError(n, path, s.Type, got)
			return
		}
		c.checkObject(n, s, path)
	case "array":
		if got != "array" {
			c.typeError(n, path, s.Type, got)
			return
		}
		if s.MaxItems != nil && int64(len(n.Content)) > *s.MaxItems {
			c.addField(n, field.TooMany(path, len(n.Content), int(*s.MaxItems)))
		}
		if s.MinItems != nil && int64(len(n.Content)) < *s.MinItems {
			c.addField(n, field.Invalid(path, len(n.Content), fmt.Sprintf("must have at least %d items", *s.MinItems)))
		}
		for i, item := range n.Content {
			c.check(item, s.Items, path.Index(i))
		}
		c.checkListType(n, s, path)
	case "string":
		if got != "string" {
			if len(s.Enum) > 0 && got == "boolean" {
				c.yaml11Bool(n, s, path)
				return
			}
			c.typeError(n, path, s.Type, got)
			return
		}
		if len(s.Enum) > 0 && n.Style == 0 && yaml11Bools[n.Value] {
			c.yaml11Bool(n, s, path)
			return
		}
		l := int64(utf8.RuneCountInString(n.Value))
		if s.MaxLength != nil && l > *s.MaxLength {
			c.addField(n, field.TooLong(path, "", int(*s.MaxLength)))
		}
		if s.MinLength != nil && l < *s.MinLength {
			c.addField(n, field.Invalid(path, n.Value, fmt.Sprintf("must be at least %d characters long", *s.MinLength)))
		}
		if s.pattern != nil && !s.pattern.MatchString(n.Value) {
			c.addField(n, field.Invalid(path, n.Value, fmt.Sprintf("must match the pattern %s", s.Pattern)))
		}
		c.checkEnum(n, s, path)
	case "integer", "number":
		if got != "integer" && (s.Type == "integer" || got != "number") {
			c.typeError(n, path, s.Type, got)
			return
		}
		v, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if got == "integer" {
			var i int64
			if err = n.Decode(&i); err == nil {
				v = float64(i)
			}
		}
		var bad any = n.Value
		if got == "integer" && err == nil {
			bad = int64(v)
		}
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			c.addField(n, field.Invalid(path, n.Value, "not a number"))
			return
		}
		if s.Type == "integer" && s.Format == "int32" && (v < math.MinInt32 || v > math.MaxInt32) {
			c.addField(n, field.Invalid(path, bad, "out of the range of a 32-bit integer"))
			return
		}
		if s.Minimum != nil && (v < *s.Minimum || s.ExclusiveMinimum && v == *s.Minimum) {
			c.addField(n, field.Invalid(path, bad, fmt.Sprintf("must be greater than or equal to %v", *s.Minimum)))
		}
		if s.Maximum != nil && (v > *s.Maximum || s.ExclusiveMaximum && v == *s.Maximum) {
			c.addField(n, field.Invalid(path, bad, fmt.Sprintf("must be less than or equal to %v", *s.Maximum)))
		}
		c.checkEnum(n, s, path)
	case "boolean":
		if got != "boolean" {
			c.typeError(n, path, s.Type, got)
		}
	}
}

func (c *schemaCheck) typeError(n *yaml.Node, path *field.Path, want, got string) {
	reason := fmt.Sprintf("Invalid type: must be %s, not %s", article(want), article(got))
	if want == "string" && n.Kind == yaml.ScalarNode {
		reason += fmt.Sprintf(" (quote it: %q)", policyTruncate(n.Value))
	}
	c.add(n, path, reason)
}

func (c *schemaCheck) yaml11Bool(n *yaml.Node, s *Schema, path *field.Path) {
	c.add(n, path, fmt.Sprintf("Invalid value: unquoted %s is a boolean in YAML 1.1 (kubectl and the API server read it as %v): quote it, %q (supported values: %s)",
		n.Value, yaml11Value(n.Value), n.Value, enumList(s.Enum)))
}

func yaml11Value(v string) bool {
	switch strings.ToLower(v) {
	case "y", "yes", "on", "true":
		return true
	}
	return false
}

func article(t string) string {
	switch t {
	case "object", "array", "integer":
		return "an " + t
	case "null":
		return "null"
	}
	return "a " + t
}

func enumList(enum []any) string {
	out := make([]string, len(enum))
	for i, e := range enum {
		out[i] = strconv.Quote(fmt.Sprint(e))
	}
	return strings.Join(out, ", ")
}

func (c *schemaCheck) checkEnum(n *yaml.Node, s *Schema, path *field.Path) {
	if len(s.Enum) == 0 {
		return
	}
	for _, e := range s.Enum {
		if fmt.Sprint(e) == n.Value {
			return
		}
	}
	c.add(n, path, fmt.Sprintf("Unsupported value: %q: supported values: %s", policyTruncate(n.Value), enumList(s.Enum)))
}

func (c *schemaCheck) checkObject(n *yaml.Node, s *Schema, path *field.Path) {
	present := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		key := k.Value
		if _, dup := present[key]; dup {
			c.add(k, path.Child(key), "Duplicate value: the key appears twice")
		}
		present[key] = resolve(v)
		switch {
		case s.Properties[key] != nil:
			c.check(v, s.Properties[key], path.Child(key))
		case s.AdditionalProperties != nil:
			c.check(v, s.AdditionalProperties, path.Key(key))
		case s.PreserveUnknown:
		case len(s.Properties) == 0 && path != nil && path.String() == "metadata":
			if !objectMetaFields()[key] {
				c.unknown(k, path.Child(key), keys(objectMetaFields()))
			}
		default:
			known := make([]string, 0, len(s.Properties))
			for p := range s.Properties {
				known = append(known, p)
			}
			c.unknown(k, path.Child(key), known)
		}
	}
	for _, r := range s.Required {
		if v, ok := present[r]; !ok || isNull(v) {
			c.addField(n, field.Required(path.Child(r), ""))
		}
	}
	if s.MaxProperties != nil && int64(len(present)) > *s.MaxProperties {
		c.addField(n, field.TooMany(path, len(present), int(*s.MaxProperties)))
	}
	if s.MinProperties != nil && int64(len(present)) < *s.MinProperties {
		c.addField(n, field.Invalid(path, len(present), fmt.Sprintf("must have at least %d fields", *s.MinProperties)))
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (c *schemaCheck) unknown(k *yaml.Node, path *field.Path, known []string) {
	reason := "Unknown field: not part of " + c.kind
	if s := Suggest(k.Value, known); s != "" {
		reason += fmt.Sprintf(" (did you mean %s?)", s)
	}
	c.add(k, path, reason)
}

// checkListType checks the uniqueness x-kubernetes-list-type set and map
// promise.
func (c *schemaCheck) checkListType(n *yaml.Node, s *Schema, path *field.Path) {
	switch s.ListType {
	case "set":
		seen := map[string]int{}
		for i, item := range n.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode {
				continue
			}
			if j, dup := seen[item.Value]; dup {
				c.addField(item, field.Duplicate(path.Index(i), fmt.Sprintf("%s (also item %d)", policyTruncate(item.Value), j)))
			}
			seen[item.Value] = i
		}
	case "map":
		seen := map[string]int{}
		for i, item := range n.Content {
			item = resolve(item)
			if item.Kind != yaml.MappingNode {
				continue
			}
			var key []string
			for _, k := range s.ListMapKeys {
				v := ""
				for j := 0; j+1 < len(item.Content); j += 2 {
					if item.Content[j].Value == k {
						v = resolve(item.Content[j+1]).Value
					}
				}
				key = append(key, v)
			}
			kk := strings.Join(key, "\x00")
			if j, dup := seen[kk]; dup {
				c.addField(item, field.Duplicate(path.Index(i), fmt.Sprintf("%s (also item %d)", policyTruncate(strings.Join(key, ",")), j)))
			}
			seen[kk] = i
		}
	}
}

// short is a scalar's value, shortened, for a message; a collection is named
// by its type.
func short(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return policyTruncate(n.Value)
	}
	return nodeType(n)
}

// Suggest returns the known name nearest to name when it is close enough to
// be a typo (an edit distance of at most a third of its length, or a
// difference of case only); "" otherwise.
func Suggest(name string, known []string) string {
	best, bestD := "", math.MaxInt
	sort.Strings(known)
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
		if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	limit := max(1, (max(len(name), len(best))+2)/3)
	if best == "" || bestD > limit {
		return ""
	}
	return best
}

// editDistance is the Damerau-Levenshtein distance (optimal string
// alignment) of a and b, in bytes; inputs longer than 64 bytes are not
// compared (math.MaxInt).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
