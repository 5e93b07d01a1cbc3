// Package coredns provides the CoreDNS binary the tests use as a real upstream
// resolver and as the NodeLocal-DNSCache-style baseline of the benchmarks: built
// with `go install github.com/coredns/coredns@Version` once per machine into
// ${EGRESSD_CACHE:-$HOME/.cache/egressd}/coredns-<Version>/ and reused after.
package coredns

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// Version is the CoreDNS release the tests use.
const Version = "v1.13.1"

// CacheDir is where the binary is kept.
func CacheDir() (string, error) {
	base := os.Getenv("EGRESSD_CACHE")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no home directory for the cache: %w", err)
		}
		base = filepath.Join(home, ".cache", "egressd")
	}
	return filepath.Join(base, "coredns-"+Version), nil
}

// EnsureBinary returns the cached binary, building it first when it is missing;
// concurrent callers (several test processes) build it once. Build output goes
// to logw.
func EnsureBinary(ctx context.Context, logw io.Writer) (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Fprintf(logw, "building CoreDNS %s into %s (about 2 minutes)\n", Version, dir)
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/coredns/coredns@"+Version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install github.com/coredns/coredns@%s: %w", Version, err)
	}
	return bin, nil
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
