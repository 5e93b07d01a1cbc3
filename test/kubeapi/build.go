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
	"time"

	"github.com/egressd/egressd/test/toolcache"
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

// CacheDir is where the binary is cached.
func CacheDir() string { return tool.Dir() }

// BinaryPath is the binary used: $EGRESSD_KUBE_APISERVER when set, else the cached one.
func BinaryPath() string { return tool.Path() }

// tool builds and caches the binary (test/toolcache).
var tool = toolcache.Tool{Name: "kube-apiserver", Version: Version, Override: "EGRESSD_KUBE_APISERVER", Build: build}

// EnsureBinary returns the path of the kube-apiserver binary, building it first if it is
// not cached; concurrent test processes build it once.
func EnsureBinary(ctx context.Context, logw io.Writer) (string, error) {
	if logw == nil {
		logw = io.Discard
	}
	return tool.Ensure(ctx, logw)
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
		cmd := exec.CommandContext(ctx, toolcache.GoTool(), args...)
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
