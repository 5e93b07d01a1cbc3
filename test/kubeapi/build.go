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
var tool = toolcache.Tool{Name: "kube-apiserver", Version: Version, Override: "EGRESSD_KUBE_APISERVER",
	Build: func(ctx context.Context, dir, bin string, logw io.Writer) error {
		return build(ctx, dir, []string{pkg}, bin, logw)
	}}

// NodeCommands are the k8s.io/kubernetes commands a whole node needs (test/cluster):
// built together, in one go build, by EnsureNodeBinaries.
var NodeCommands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// nodeTool builds every NodeCommands binary into one cache directory; kubectl, the
// last one moved into place, marks the build done.
var nodeTool = toolcache.Tool{Name: "kubernetes", Version: Version, Binary: "kubectl",
	Build: func(ctx context.Context, dir, _ string, logw io.Writer) error {
		pkgs := make([]string, len(NodeCommands))
		for i, c := range NodeCommands {
			pkgs[i] = module + "/cmd/" + c
		}
		return build(ctx, dir, pkgs, dir, logw)
	}}

// NodeBinDir is the cache directory holding the NodeCommands binaries.
func NodeBinDir() string { return nodeTool.Dir() }

// EnsureNodeBinaries returns the directory holding every NodeCommands binary, building
// them first (one go build, about 15 minutes cold on 2 cores) when they are not cached.
func EnsureNodeBinaries(ctx context.Context, logw io.Writer) (string, error) {
	if logw == nil {
		logw = io.Discard
	}
	if _, err := nodeTool.Ensure(ctx, logw); err != nil {
		return "", err
	}
	return nodeTool.Dir(), nil
}

// ldflags set the version the binaries report (kubectl version, the API server's
// /version, the kubelet's node status) to the real one instead of v0.0.0-master.
func ldflags() string {
	minor := strings.Split(strings.TrimPrefix(Version, "v"), ".")
	return strings.Join([]string{
		"-X k8s.io/component-base/version.gitVersion=" + Version,
		"-X k8s.io/component-base/version.gitMajor=" + minor[0],
		"-X k8s.io/component-base/version.gitMinor=" + minor[1],
		"-X k8s.io/component-base/version.gitTreeState=clean",
	}, " ")
}

// EnsureBinary returns the path of the kube-apiserver binary, building it first if it is
// not cached; concurrent test processes build it once.
func EnsureBinary(ctx context.Context, logw io.Writer) (string, error) {
	if logw == nil {
		logw = io.Discard
	}
	return tool.Ensure(ctx, logw)
}

// toolsGo is the tools module's tools.go importing pkgs.
func toolsGo(pkgs []string) string {
	var b strings.Builder
	b.WriteString("//go:build tools\n\npackage tools\n\nimport (\n")
	for _, p := range pkgs {
		fmt.Fprintf(&b, "\t_ %q\n", p)
	}
	b.WriteString(")\n")
	return b.String()
}

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

// build makes the tools module in dir/src and builds pkgs: one package into the file
// out, several into the directory out (each binary moved into place atomically, in the
// order of pkgs, so the last one's presence means all are there).
func build(ctx context.Context, dir string, pkgs []string, out string, logw io.Writer) error {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "build.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	logOut := io.Writer(logf)
	if logw != nil {
		logOut = io.MultiWriter(logf, logw)
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	run := func(args ...string) ([]byte, error) {
		fmt.Fprintf(logOut, "+ go %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, toolcache.GoTool(), args...)
		cmd.Dir = src
		cmd.Env = env
		var stdout bytes.Buffer
		cmd.Stdout = io.MultiWriter(&stdout, logOut)
		cmd.Stderr = logOut
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building %s %s: go %s: %w (log: %s)", strings.Join(pkgs, " "), Version, strings.Join(args, " "), err, logf.Name())
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
	if err := os.WriteFile(filepath.Join(src, "tools.go"), []byte(toolsGo(pkgs)), 0o644); err != nil {
		return err
	}
	if _, err := run("mod", "tidy"); err != nil {
		return err
	}
	if len(pkgs) == 1 {
		tmp := out + ".tmp"
		if _, err := run("build", "-ldflags", ldflags(), "-o", tmp, pkgs[0]); err != nil {
			return err
		}
		if err := os.Rename(tmp, out); err != nil {
			return err
		}
	} else {
		tmp := filepath.Join(dir, "bin.tmp")
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		if _, err := run(append([]string{"build", "-ldflags", ldflags(), "-o", tmp + "/"}, pkgs...)...); err != nil {
			return err
		}
		for _, p := range pkgs {
			name := filepath.Base(p)
			if err := os.Rename(filepath.Join(tmp, name), filepath.Join(out, name)); err != nil {
				return err
			}
		}
		_ = os.Remove(tmp)
	}
	fmt.Fprintf(logOut, "built %s in %s\n", out, time.Since(start).Round(time.Second))
	return nil
}
