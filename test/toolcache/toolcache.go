// Package toolcache builds the real components the tests use (Jaeger,
// kube-apiserver, CoreDNS, the node components of test/cluster) once per machine and caches them under
// ${EGRESSD_CACHE:-$HOME/.cache/egressd}/<name>-<version>/<name>. Concurrent
// test processes wait for one build (a file lock in the cache directory).
package toolcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// BaseDir is the cache root: $EGRESSD_CACHE, else $HOME/.cache/egressd.
func BaseDir() string {
	if base := os.Getenv("EGRESSD_CACHE"); base != "" {
		return base
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "egressd")
}

// Tool is one cached binary.
type Tool struct {
	// Name is the binary's name and the prefix of its cache directory.
	Name    string
	Version string
	// Override, when set, names an environment variable that points at a
	// prebuilt binary to use instead of the cache.
	Override string
	// Binary is the file inside Dir whose presence means the build is done
	// (a tool that builds several binaries writes it last); empty: Name.
	Binary string
	// Build writes the binary to bin (inside dir), logging to logw.
	Build func(ctx context.Context, dir, bin string, logw io.Writer) error
}

// Dir is the tool's cache directory.
func (t Tool) Dir() string { return filepath.Join(BaseDir(), t.Name+"-"+t.Version) }

// Path is the binary the tool resolves to (the override or the cached one).
func (t Tool) Path() string {
	if t.Override != "" {
		if p := os.Getenv(t.Override); p != "" {
			return p
		}
	}
	if t.Binary != "" {
		return filepath.Join(t.Dir(), t.Binary)
	}
	return filepath.Join(t.Dir(), t.Name)
}

var buildMu sync.Mutex

// Ensure returns the binary, building it first when it is not cached.
func (t Tool) Ensure(ctx context.Context, logw io.Writer) (string, error) {
	bin := t.Path()
	if IsExecutable(bin) {
		return bin, nil
	}
	if t.Override != "" && os.Getenv(t.Override) != "" {
		return "", fmt.Errorf("%s=%s is not an executable file", t.Override, bin)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	dir := t.Dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := flock(ctx, lock, t.Name); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if IsExecutable(bin) { // built by another process meanwhile
		return bin, nil
	}
	if err := t.Build(ctx, dir, bin, logw); err != nil {
		return "", err
	}
	return bin, nil
}

func flock(ctx context.Context, f *os.File, name string) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for another %s build: %w", name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// IsExecutable reports whether p is an executable regular file.
func IsExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// GoTool is the go command to build with.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // not on PATH: let exec report it
}
