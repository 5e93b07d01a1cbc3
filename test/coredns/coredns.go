// Package coredns provides the CoreDNS binary the tests use as a real upstream
// resolver and as the NodeLocal-DNSCache-style baseline of the benchmarks: built
// with `go install github.com/coredns/coredns@Version` once per machine into
// ${EGRESSD_CACHE:-$HOME/.cache/egressd}/coredns-<Version>/ (test/toolcache) and
// reused after.
package coredns

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/egressd/egressd/test/testenv"
	"github.com/egressd/egressd/test/toolcache"
)

// Version is the CoreDNS release the tests use.
const Version = "v1.13.1"

// tool builds and caches the binary (test/toolcache).
var tool = toolcache.Tool{Name: "coredns", Version: Version, Override: "EGRESSD_COREDNS", Build: build}

// CacheDir is where the binary is kept.
func CacheDir() string { return tool.Dir() }

// EnsureBinary returns the cached binary ($EGRESSD_COREDNS when set), building it
// first when it is missing; concurrent callers build it once. Build output goes
// to logw.
func EnsureBinary(ctx context.Context, logw io.Writer) (string, error) {
	return tool.Ensure(ctx, logw)
}

func build(ctx context.Context, dir, bin string, logw io.Writer) error {
	fmt.Fprintf(logw, "building CoreDNS %s into %s (about 2 minutes)\n", Version, dir)
	cmd := exec.CommandContext(ctx, toolcache.GoTool(), "install", "github.com/coredns/coredns@"+Version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go install github.com/coredns/coredns@%s: %w", Version, err)
	}
	return nil
}

// Binary returns the binary for a test: outside CI a failed build skips the
// test, in CI it fails it.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := EnsureBinary(context.Background(), testLog{t})
	if err != nil {
		testenv.Unavailable(t, "CoreDNS: %v", err)
	}
	return bin
}

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Logf("%s", p)
	return len(p), nil
}
