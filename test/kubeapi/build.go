package kubeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version of the k8s.io/kubernetes Go module whose kube-apiserver is built; the staging
// modules (k8s.io/api, k8s.io/apiserver, ...) are pinned to StagingVersion.
const (
	Version        = "v1.37.2"
	StagingVersion = "v0.37.2"
)

const (
	module = "k8s.io/kubernetes"
	pkg    = module + "/cmd/kube-apiserver"
)

// CacheDir is the directory of the cached build: $EGRESSD_CACHE (or
// $HOME/.cache/egressd) + "/kube-apiserver-" + Version.
func CacheDir() string {
	base := os.Getenv("EGRESSD_CACHE")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache", "egressd")
	}
	return filepath.Join(base, "kube-apiserver-"+Version)
}

// BinaryPath is where the cached binary lives (or EGRESSD_KUBE_APISERVER when set).
func BinaryPath() string {
	if p := os.Getenv("EGRESSD_KUBE_APISERVER"); p != "" {
		return p
	}
	return filepath.Join(CacheDir(), "kube-apiserver")
}

var buildMu sync.Mutex

// EnsureBinary returns the path of the kube-apiserver binary, building it first if it is
// not cached. logw, if not nil, receives the build's progress.
func EnsureBinary(ctx context.Context, logw io.Writer) (string, error) {
	bin := BinaryPath()
	if isExecutable(bin) {
		return bin, nil
	}
	if os.Getenv("EGRESSD_KUBE_APISERVER") != "" {
		return "", fmt.Errorf("EGRESSD_KUBE_APISERVER=%s is not an executable file", bin)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Serialise builds across processes (go test runs packages in parallel).
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := flock(ctx, lock); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if isExecutable(bin) { // built by another process meanwhile
		return bin, nil
	}
	if err := build(ctx, dir, bin, logw); err != nil {
		return "", err
	}
	return bin, nil
}

func flock(ctx context.Context, f *os.File) error {
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
			return fmt.Errorf("waiting for another kube-apiserver build: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // not on PATH: let exec report it
}

const toolsGo = `//go:build tools

package tools

import _ "` + pkg + `"
`

// stagingReplace matches "k8s.io/<name> => ./staging/src/k8s.io/<name>" in the
// k8s.io/kubernetes go.mod (inside a replace block or on a replace line).
var stagingReplace = regexp.MustCompile(`(?m)^\s*(?:replace\s+)?(k8s\.io/[A-Za-z0-9._/-]+)\s*=>\s*\./staging/src/`)

// toolsGoMod returns the tools module's go.mod: k8s.io/kubernetes at Version and every
// staging replace of its own go.mod redirected to the published module at StagingVersion.
func toolsGoMod(kubeGoMod []byte) (string, error) {
	var names []string
	seen := map[string]bool{}
	for _, m := range stagingReplace.FindAllSubmatch(kubeGoMod, -1) {
		n := string(m[1])
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "", errors.New("no ./staging/src replaces found in the k8s.io/kubernetes go.mod")
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("module egressd.test/kubetools\n\ngo 1.26.0\n\nrequire " + module + " " + Version + "\n\nreplace (\n")
	for _, n := range names {
		fmt.Fprintf(&b, "\t%s => %s %s\n", n, n, StagingVersion)
	}
	b.WriteString(")\n")
	return b.String(), nil
}

// build makes the tools module in dir/src and builds the binary into bin (atomically).
func build(ctx context.Context, dir, bin string, logw io.Writer) error {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "build.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	out := io.Writer(logf)
	if logw != nil {
		out = io.MultiWriter(logf, logw)
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	run := func(args ...string) ([]byte, error) {
		fmt.Fprintf(out, "+ go %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, goTool(), args...)
		cmd.Dir = src
		cmd.Env = env
		var stdout bytes.Buffer
		cmd.Stdout = io.MultiWriter(&stdout, out)
		cmd.Stderr = out
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building kube-apiserver %s: go %s: %w (log: %s)", Version, strings.Join(args, " "), err, logf.Name())
		}
		return stdout.Bytes(), nil
	}
	start := time.Now()
	if _, err := os.Stat(filepath.Join(src, "go.sum")); err != nil {
		// Fresh module (an existing go.mod/go.sum from an interrupted build already has
		// the resolved versions).
		if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module egressd.test/kubetools\n\ngo 1.26.0\n"), 0o644); err != nil {
			return err
		}
		js, err := run("mod", "download", "-json", module+"@"+Version)
		if err != nil {
			return err
		}
		var info struct{ GoMod, Error string }
		if err := json.NewDecoder(bytes.NewReader(js)).Decode(&info); err != nil {
			return fmt.Errorf("go mod download -json: %w", err)
		}
		if info.Error != "" || info.GoMod == "" {
			return fmt.Errorf("go mod download %s@%s: %s", module, Version, info.Error)
		}
		kgm, err := os.ReadFile(info.GoMod)
		if err != nil {
			return err
		}
		gm, err := toolsGoMod(kgm)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gm), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(src, "tools.go"), []byte(toolsGo), 0o644); err != nil {
		return err
	}
	tmp := bin + ".tmp"
	if _, err := run("mod", "tidy"); err != nil {
		return err
	}
	if _, err := run("build", "-o", tmp, pkg); err != nil {
		return err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return err
	}
	fmt.Fprintf(out, "built %s in %s\n", bin, time.Since(start).Round(time.Second))
	return nil
}
