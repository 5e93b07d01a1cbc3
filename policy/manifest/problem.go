package manifest

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/egressd/egressd/policy"
)

// Problem is one thing wrong with a document of a policy or workloads file:
// where it is (file and document, the file's line, the object, the field
// path) and why. Decode returns every problem it finds, each as a *Problem
// (joined with errors.Join).
type Problem struct {
	// Source is "file:document" (documents counted from 1; a List's items
	// are "file:document/items[i]"), or the file of a workloads file.
	Source string `json:"source"`
	// Line is the line of the file (not of the document), from 1; 0 when
	// unknown.
	Line int `json:"line,omitempty"`
	// Object is "Kind/namespace/name" or "Kind/name" (policy.PolicyRef), or
	// "pod namespace/name" in a workloads file; empty when unknown.
	Object string `json:"object"`
	// Field is the field path, e.g. spec.egress[0].ports[1].port; empty when
	// the problem is not about one field.
	Field string `json:"field"`
	// Reason says what is wrong.
	Reason string `json:"reason"`

	err error
}

// Error is "source: line N: object: field: reason", without the parts that
// do not apply.
func (p *Problem) Error() string {
	var parts []string
	if p.Source != "" {
		parts = append(parts, p.Source)
	}
	if p.Line > 0 {
		parts = append(parts, fmt.Sprintf("line %d", p.Line))
	}
	for _, s := range []string{p.Object, p.Field} {
		if s != "" {
			parts = append(parts, policy.Truncate(s))
		}
	}
	return strings.Join(append(parts, policy.Truncate(p.Reason)), ": ")
}

// Unwrap returns the underlying error, if any (ErrCutShort, a YAML error).
func (p *Problem) Unwrap() error { return p.err }

func policyTruncate(s string) string { return policy.Truncate(s) }

// splitDocumentsLines is SplitDocuments with the line of the file each
// document starts on (from 1).
func splitDocumentsLines(data []byte) ([][]byte, []int) {
	var docs [][]byte
	starts := []int{1}
	var cur []byte
	line := 0
	for _, l := range bytes.SplitAfter(data, []byte("\n")) {
		line++
		t := bytes.TrimRight(l, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, cur)
			cur = nil
			starts = append(starts, line+1)
			continue
		}
		cur = append(cur, l...)
	}
	return append(docs, cur), starts
}
