package manifest_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// clusterPolicies returns n small valid ClusterFirewallPolicy documents.
func clusterPolicies(n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "---\napiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: p%d}\nspec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchPattern: \"*.pool%d.example\"}}]}]}\n", i, i)
	}
	return b.Bytes()
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func tooLarge(t *testing.T, err error, what string) *manifest.TooLargeError {
	t.Helper()
	var tl *manifest.TooLargeError
	if !errors.As(err, &tl) || tl.What != what {
		t.Fatalf("error %v, want a *TooLargeError about %s", err, what)
	}
	if len(err.Error()) > 400 {
		t.Errorf("error message is %d bytes long", len(err.Error()))
	}
	return tl
}

// TestFileOfFiftyMegabytesIsRefused: a 50 MB policy file (valid policies up to
// the limit, then more) is refused without decoding, and nothing is returned.
func TestFileOfFiftyMegabytesIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.yaml")
	doc := clusterPolicies(1000)
	var b bytes.Buffer
	for b.Len() < 50<<20 {
		b.Write(doc)
	}
	writeFile(t, path, b.Bytes())
	for _, decode := range []func(string) ([]manifest.Object, error){manifest.DecodeFile, manifest.DecodePath} {
		objs, err := decode(path)
		tl := tooLarge(t, err, "bytes")
		if len(objs) != 0 || tl.Count != int64(b.Len()) || tl.Limit != manifest.DefaultLimits.FileBytes {
			t.Fatalf("got %d objects, %+v", len(objs), tl)
		}
	}
	// Through a reader (no size known in advance) as well.
	objs, err := manifest.Decode("stdin", bytes.NewReader(b.Bytes()))
	if tooLarge(t, err, "bytes"); len(objs) != 0 {
		t.Fatalf("got %d objects", len(objs))
	}
}

// TestTooManyPoliciesAreRefused: one policy more than the limit is refused —
// in one file, in a List, across the files of a directory — while the limit
// itself loads; 200,000 policies are refused by size before anything is parsed.
func TestTooManyPoliciesAreRefused(t *testing.T) {
	lim := manifest.DefaultLimits.Objects
	if lim != policy.MaxPolicies {
		t.Fatalf("DefaultLimits.Objects %d, want policy.MaxPolicies %d", lim, policy.MaxPolicies)
	}
	dir := t.TempDir()
	over := filepath.Join(dir, "over.yaml")
	writeFile(t, over, clusterPolicies(lim+1))
	objs, err := manifest.DecodeFile(over)
	if tl := tooLarge(t, err, "policies"); len(objs) != 0 || tl.Count != int64(lim+1) {
		t.Fatalf("got %d objects, %+v", len(objs), tl)
	}

	// A smaller limit keeps the rest of the test fast.
	small := manifest.Limits{FileBytes: 1 << 20, TotalBytes: 4 << 20, Objects: 50}
	objs, err = small.Decode("exact", bytes.NewReader(clusterPolicies(50)))
	if err != nil || len(objs) != 50 {
		t.Fatalf("50 policies at a limit of 50: %d objects, %v", len(objs), err)
	}
	var list bytes.Buffer
	list.WriteString("apiVersion: v1\nkind: List\nitems:\n")
	for i := 0; i < 51; i++ {
		fmt.Fprintf(&list, "- {apiVersion: egressd.io/v1alpha1, kind: ClusterFirewallPolicy, metadata: {name: l%d}, spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny}]}}\n", i)
	}
	objs, err = small.Decode("list", &list)
	if tooLarge(t, err, "policies"); len(objs) != 0 {
		t.Fatalf("List of 51: got %d objects", len(objs))
	}
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(tree, "a.yaml"), clusterPolicies(30))
	writeFile(t, filepath.Join(tree, "b.yaml"), bytes.ReplaceAll(clusterPolicies(21), []byte("name: p"), []byte("name: q")))
	objs, err = small.DecodePath(tree)
	if tooLarge(t, err, "policies"); len(objs) != 0 {
		t.Fatalf("directory of 51: got %d objects", len(objs))
	}

	huge := filepath.Join(dir, "huge.yaml")
	writeFile(t, huge, clusterPolicies(200000))
	objs, err = manifest.DecodePath(huge)
	if tooLarge(t, err, "bytes"); len(objs) != 0 {
		t.Fatalf("200,000 policies: got %d objects", len(objs))
	}
}

// TestDirectoryBeyondTotalBytesIsRefused: files each below the file limit but
// together beyond the directory limit refuse the whole directory.
func TestDirectoryBeyondTotalBytesIsRefused(t *testing.T) {
	dir := t.TempDir()
	doc := clusterPolicies(40)
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("%d.yaml", i)), bytes.ReplaceAll(doc, []byte("name: p"), []byte(fmt.Sprintf("name: f%d-", i))))
	}
	small := manifest.Limits{FileBytes: int64(len(doc)) + 100, TotalBytes: 2*int64(len(doc)) + 100, Objects: 1000}
	objs, err := small.DecodePath(dir)
	if tooLarge(t, err, "bytes"); len(objs) != 0 {
		t.Fatalf("got %d objects", len(objs))
	}
	small.TotalBytes *= 2
	if objs, err := small.DecodePath(dir); err != nil || len(objs) != 120 {
		t.Fatalf("within the limits: %d objects, %v", len(objs), err)
	}
}

// TestHugeValuesAreNotEchoed: a megabyte-long kind, unknown field, label value,
// name or pattern produces an error of a few hundred bytes that still says
// what is wrong.
func TestHugeValuesAreNotEchoed(t *testing.T) {
	mb := strings.Repeat("x", 1<<20)
	docs := map[string]struct{ doc, says string }{
		"kind":          {"apiVersion: egressd.io/v1alpha1\nkind: " + mb + "\n", "unsupported kind"},
		"unknown field": {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: a}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaceSelector: {}}\n  ? " + mb + "\n  : 1\n", "Unknown field"},
		"label value":   {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: a}\nspec: {tier: Admin, priority: 1, subject: {namespaceSelector: {matchLabels: {team: " + mb + "}}}, egress: [{action: Deny}]}\n", "must be no more than 63"},
		"label key":     {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: a}\nspec:\n  tier: Admin\n  priority: 1\n  egress: [{action: Deny}]\n  subject:\n    namespaceSelector:\n      matchLabels:\n        ? " + mb + "\n        : a\n", "namespaceSelector"},
		"name":          {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: " + mb + "}\nspec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny}]}\n", "must be no more than 253"},
		"pattern":       {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: a}\nspec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchPattern: \"" + mb + ".com\"}}]}]}\n", "more than 253"},
		"cidr":          {"apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: a}\nspec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{cidr: \"" + mb + "\"}]}]}\n", "Too long"},
	}
	for what, c := range docs {
		objs, err := manifest.Decode("test.yaml", strings.NewReader(c.doc))
		if err == nil {
			if len(objs) != 1 {
				t.Fatalf("%s: %d objects", what, len(objs))
			}
			_, err = manifest.LoadStore(objs, nil)
		}
		if err == nil {
			t.Fatalf("%s: accepted", what)
		}
		msg := err.Error()
		if len(msg) > 1200 || !strings.Contains(msg, c.says) {
			t.Errorf("%s: %d-byte error, want < 1200 bytes saying %q: %.600s", what, len(msg), c.says, msg)
		}
	}
}
