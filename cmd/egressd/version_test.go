package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersion: `egressd --version` prints the version and exits 0 without
// starting the agent; the flag is documented.
func TestVersion(t *testing.T) {
	for args, want := range map[string]bool{"--version": true, "-version": true, "": false, "--version --policies x": false, "--policies": false} {
		if got := versionRequested(strings.Fields(args)); got != want {
			t.Errorf("%q: %v", args, got)
		}
	}
	doc, err := os.ReadFile("../../docs/egressd.md")
	if err != nil || !strings.Contains(string(doc), "`--version`") {
		t.Errorf("docs/egressd.md does not document --version (%v)", err)
	}
	if testing.Short() {
		return
	}
	bin := filepath.Join(t.TempDir(), "egressd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "egressd ") || !strings.Contains(string(out), " go1.") {
		t.Fatalf("egressd --version: %v %q", err, out)
	}
}
