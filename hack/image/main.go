// Command image builds egressd's container image without a Docker daemon
// (`make image`): static egressd and egressctl (CGO_ENABLED=0, -trimpath),
// an empty base, egressd as the entrypoint, user 0:0 as the DaemonSet sets
// (runAsUser: 0 with only NET_ADMIN, NET_RAW and NET_BIND_SERVICE), the OCI
// labels source, revision, version and created, and a fixed creation time
// (the commit's), so that the same commit gives the same image digest. It
// writes an image archive containerd imports (`ctr -n k8s.io images import`)
// and, next to it, the `go version -m` listing of the Go modules inside.
//
// The image name defaults to the chart's: image.repository in
// deploy/helm/egressd/values.yaml and the chart's appVersion as the tag, which
// deploy/kustomization.yaml pins too.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/internal/ociimage"
)

// Paths of the binaries in the image.
const (
	egressdPath   = "/usr/local/bin/egressd"
	egressctlPath = "/usr/local/bin/egressctl"
	// imageUser is the user the DaemonSet runs the agent as (runAsUser and
	// runAsGroup 0): Kubernetes sets no ambient capabilities and
	// allowPrivilegeEscalation: false ignores file capabilities, so only uid
	// 0 holds the NET_ADMIN the agent needs; every other capability is
	// dropped.
	imageUser = "0:0"
	// source is the org.opencontainers.image.source label.
	source = "https://github.com/egressd/egressd"
)

// options are the inputs of one image build; equal options on the same
// source tree give the same image.
type options struct {
	dir      string // the module's root
	out      string // the image archive
	ref      string // e.g. ghcr.io/egressd/egressd:0.1.0; default from the chart
	version  string // default: the chart's appVersion
	revision string // default: git rev-parse HEAD
	created  time.Time
	goEnv    []string // extra environment for go build (tests: GOCACHE)
}

// result is what a build printed and wrote.
type result struct {
	Image   string `json:"image"`
	Digest  string `json:"digest"`
	Archive string `json:"archive"`
	Size    int64  `json:"size"`
	Modules string `json:"modules"`
}

func main() {
	var o options
	var created string
	flag.StringVar(&o.dir, "C", ".", "the module's root directory")
	flag.StringVar(&o.out, "out", "bin/egressd-image.tar", "the image archive to write; the modules list goes next to it (.modules.txt)")
	flag.StringVar(&o.ref, "image", "", "the image name:tag (default: the chart's image.repository and appVersion)")
	flag.StringVar(&o.version, "version", "", "the version in egressctl version and the version label (default: the chart's appVersion)")
	flag.StringVar(&o.revision, "revision", "", "the revision label (default: git rev-parse HEAD)")
	flag.StringVar(&created, "created", "", "the creation time, Unix seconds (default: $SOURCE_DATE_EPOCH, else the commit's time)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "image: no arguments expected")
		os.Exit(2)
	}
	if created == "" {
		created = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if created != "" {
		s, err := strconv.ParseInt(created, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "image: -created %q: want Unix seconds\n", created)
			os.Exit(2)
		}
		o.created = time.Unix(s, 0)
	}
	r, err := build(o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

// build builds the binaries and the image and writes the archive and the
// modules list.
func build(o options, log io.Writer) (result, error) {
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return result{}, err
	}
	repo, appVersion, err := chartImage(dir)
	if err != nil {
		return result{}, err
	}
	if o.version == "" {
		o.version = appVersion
	}
	if o.ref == "" {
		o.ref = repo + ":" + appVersion
	}
	if o.revision == "" {
		if o.revision, err = git(dir, "rev-parse", "HEAD"); err != nil {
			return result{}, err
		}
	}
	if o.created.IsZero() {
		ct, err := git(dir, "log", "-1", "--format=%ct")
		if err != nil {
			return result{}, err
		}
		s, err := strconv.ParseInt(ct, 10, 64)
		if err != nil {
			return result{}, fmt.Errorf("commit time %q: %w", ct, err)
		}
		o.created = time.Unix(s, 0)
	}
	binDir, err := os.MkdirTemp("", "egressd-image-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(binDir)
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -buildid= -X main.version="+o.version,
		"-o", binDir+"/", "./cmd/egressd", "./cmd/egressctl")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=readonly"), o.goEnv...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("go build: %w", err)
	}
	files := []ociimage.File{}
	for _, b := range []struct{ src, dst string }{{"egressd", egressdPath}, {"egressctl", egressctlPath}} {
		content, err := os.ReadFile(filepath.Join(binDir, b.src))
		if err != nil {
			return result{}, err
		}
		files = append(files, ociimage.File{Path: b.dst, Mode: 0o755, Content: content})
	}
	vcmd := exec.Command("go", "version", "-m", filepath.Join(binDir, "egressd"), filepath.Join(binDir, "egressctl"))
	vcmd.Dir = dir
	vcmd.Env = cmd.Env
	var stderr bytes.Buffer
	vcmd.Stderr = &stderr
	modules, err := vcmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("go version -m: %w\n%s", err, stderr.String())
	}
	// The temporary directory is not part of what was built.
	modules = bytes.ReplaceAll(modules, []byte(binDir+"/"), nil)
	img, err := ociimage.Build(ociimage.Spec{
		Files:      files,
		Entrypoint: []string{egressdPath},
		User:       imageUser,
		Labels: map[string]string{
			"org.opencontainers.image.source":   source,
			"org.opencontainers.image.revision": o.revision,
			"org.opencontainers.image.version":  o.version,
			"org.opencontainers.image.created":  o.created.UTC().Format(time.RFC3339),
			"org.opencontainers.image.title":    "egressd",
		},
		Created: o.created,
	})
	if err != nil {
		return result{}, err
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return result{}, err
	}
	if err := ociimage.WriteArchiveFile(o.out, o.ref, img); err != nil {
		return result{}, err
	}
	modulesPath := strings.TrimSuffix(o.out, ".tar") + ".modules.txt"
	if err := os.WriteFile(modulesPath, modules, 0o644); err != nil {
		return result{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return result{}, err
	}
	st, err := os.Stat(o.out)
	if err != nil {
		return result{}, err
	}
	return result{Image: o.ref, Digest: d.String(), Archive: o.out, Size: st.Size(), Modules: modulesPath}, nil
}

// chartImage returns image.repository of the chart's values and its appVersion.
func chartImage(dir string) (repo, appVersion string, err error) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct {
			Repository string `json:"repository"`
		} `json:"image"`
	}
	for _, f := range []struct {
		path string
		into any
	}{{"deploy/helm/egressd/Chart.yaml", &chart}, {"deploy/helm/egressd/values.yaml", &values}} {
		b, err := os.ReadFile(filepath.Join(dir, f.path))
		if err != nil {
			return "", "", err
		}
		if err := yaml.Unmarshal(b, f.into); err != nil {
			return "", "", fmt.Errorf("%s: %w", f.path, err)
		}
	}
	if chart.AppVersion == "" || values.Image.Repository == "" {
		return "", "", fmt.Errorf("deploy/helm/egressd: no appVersion or image.repository")
	}
	return values.Image.Repository, chart.AppVersion, nil
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w (set -revision and -created outside a git checkout)", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
