// Package testenv holds the checks tests make about the machine they run on: root,
// kernel features and tools. Outside CI a missing requirement skips the test with the
// reason; in CI (CI=true) it fails the test, so that nothing is skipped silently where
// the requirement is promised.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where every requirement must be met.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the test outside CI and fails it in CI, with the reason.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required in CI but unavailable: "+format, args...)
	}
	t.Skipf("unavailable (CI=true would fail): "+format, args...)
}

// RequireRoot needs the test to run as root (network namespaces, nftables).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "test needs root")
	}
}

// RequireTools needs every named program on PATH and returns their paths in order.
func RequireTools(t testing.TB, tools ...string) []string {
	t.Helper()
	paths := make([]string, 0, len(tools))
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			Unavailable(t, "tool %q not on PATH (make test installs it)", tool)
			return nil
		}
		paths = append(paths, p)
	}
	return paths
}

// SkipShort skips a long test under -short outside CI; in CI (CI=true) the test
// always runs, -short or not, so nothing is skipped where it is promised.
func SkipShort(t testing.TB, reason string) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("-short: " + reason)
	}
}
