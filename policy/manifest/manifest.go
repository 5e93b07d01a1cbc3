// Package manifest reads policy and workload files: multi-document YAML (or JSON)
// holding FirewallPolicy, ClusterFirewallPolicy, NetworkPolicy and
// ClusterNetworkPolicy (policy.networking.k8s.io) objects, and the
// standalone workloads file. Every error names the file, the document and, for
// invalid policies, the field.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/egressd/egressd/policy"
)

// Object is one decoded policy with where it came from.
type Object struct {
	// Source is "file:document" (document counted from 1).
	Source string
	// Exactly one of the following is set.
	FirewallPolicy        *policy.FirewallPolicy
	ClusterFirewallPolicy *policy.ClusterFirewallPolicy
	NetworkPolicy         *networkingv1.NetworkPolicy
	// ClusterNetworkPolicy is read from policy.networking.k8s.io/v1alpha2 or
	// v1beta1 (identical schemas) into the v1alpha2 type.
	ClusterNetworkPolicy *cnpv1alpha2.ClusterNetworkPolicy
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
	docs := SplitDocuments(data)
	if err := CutShort(data); err != nil {
		// The last document lost its end: decoding it would take what is
		// left (a rule without its `to`) as the policy.
		last := len(docs)
		for last > 1 && len(bytes.TrimSpace(stripComments(docs[last-1]))) == 0 {
			last--
		}
		errs = append(errs, fmt.Errorf("%s:%d: %w", source, last, err))
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
		o, err := decodeOne(fmt.Sprintf("%s:%d", source, i+1), doc)
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

// shortened is an error whose message is cut by policy.Truncate (decoders
// repeat unknown field names and values from the document).
type shortened struct{ err error }

func (e shortened) Error() string { return policy.Truncate(e.err.Error()) }
func (e shortened) Unwrap() error { return e.err }

func decodeOne(src string, doc []byte) ([]Object, error) {
	var tm metav1.TypeMeta
	if err := Unmarshal(doc, &tm, false); err != nil {
		return nil, fmt.Errorf("%s: not a YAML/JSON object: %w", src, shortened{err})
	}
	strict := func(into any) error {
		if err := Unmarshal(doc, into, true); err != nil {
			return fmt.Errorf("%s: %s: %w", src, policy.Truncate(tm.Kind), shortened{err})
		}
		return nil
	}
	switch {
	case tm.Kind == "List" || strings.HasSuffix(tm.Kind, "List"):
		var list struct {
			Items []map[string]any `json:"items"`
		}
		if err := Unmarshal(doc, &list, false); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", src, policy.Truncate(tm.Kind), shortened{err})
		}
		var out []Object
		var errs []error
		for j, item := range list.Items {
			b, err := json.Marshal(item)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: items[%d]: %w", src, j, shortened{err}))
				continue
			}
			o, err := decodeOne(fmt.Sprintf("%s/items[%d]", src, j), b)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, o...)
		}
		return out, errors.Join(errs...)
	case tm.Kind == policy.KindFirewallPolicy && tm.APIVersion == policy.APIVersion:
		var p policy.FirewallPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, FirewallPolicy: &p}}, nil
	case tm.Kind == policy.KindClusterFirewallPolicy && tm.APIVersion == policy.APIVersion:
		var p policy.ClusterFirewallPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, ClusterFirewallPolicy: &p}}, nil
	case tm.Kind == policy.KindNetworkPolicy && tm.APIVersion == "networking.k8s.io/v1":
		var p networkingv1.NetworkPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, NetworkPolicy: &p}}, nil
	case tm.Kind == policy.KindClusterNetworkPolicy && slices.Contains(policy.CNPAPIVersions, tm.APIVersion):
		var p cnpv1alpha2.ClusterNetworkPolicy
		if err := strict(&p); err != nil {
			return nil, err
		}
		return []Object{{Source: src, ClusterNetworkPolicy: &p}}, nil
	case tm.Kind == "" || tm.APIVersion == "":
		return nil, fmt.Errorf("%s: apiVersion and kind are required", src)
	}
	return nil, fmt.Errorf("%s: unsupported kind %s/%s (want %s FirewallPolicy or ClusterFirewallPolicy, networking.k8s.io/v1 NetworkPolicy, or %s ClusterNetworkPolicy)", src, policy.Truncate(tm.APIVersion), policy.Truncate(tm.Kind), policy.APIVersion, strings.Join(policy.CNPAPIVersions, " or "))
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

// DecodeWorkloads decodes a workloads document.
func DecodeWorkloads(source string, data []byte) (*policy.Workloads, error) {
	if err := CutShort(data); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	var ws policy.Workloads
	if err := Unmarshal(data, &ws, true); err != nil {
		return nil, fmt.Errorf("%s: %w", source, shortened{err})
	}
	return &ws, nil
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
