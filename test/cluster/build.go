package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/egressd/egressd/test/coredns"
	"github.com/egressd/egressd/test/kubeapi"
	"github.com/egressd/egressd/test/toolcache"
)

// Versions of the node components built from their Go modules (docs/kubernetes.md says
// why these). Kubernetes is kubeapi.Version; CoreDNS is coredns.Version; runc and etcd
// are Debian's.
const (
	ContainerdVersion = "v2.4.2"
	CNIPluginsVersion = "v1.10.0"
)

const (
	containerdModule = "github.com/containerd/containerd/v2"
	cniModule        = "github.com/containernetworking/plugins"
)

// goInstall is one `go install` of packages of one module at one version.
type goInstall struct {
	pkgs []string // full package paths, without @version
	tags string
}

// installTool is a toolcache.Tool whose binaries come from `go install pkg@version`
// (CGO_ENABLED=0) into a temporary directory and are moved into the cache directory in
// order; marker, the last one, marks the build done.
func installTool(name, version, marker string, steps ...goInstall) toolcache.Tool {
	return toolcache.Tool{Name: name, Version: version, Binary: marker,
		Build: func(ctx context.Context, dir, _ string, logw io.Writer) error {
			start := time.Now()
			tmp := filepath.Join(dir, "bin.tmp")
			if err := os.MkdirAll(tmp, 0o755); err != nil {
				return err
			}
			var names []string
			for _, st := range steps {
				args := []string{"install"}
				if st.tags != "" {
					args = append(args, "-tags", st.tags)
				}
				for _, p := range st.pkgs {
					args = append(args, p+"@"+version)
					names = append(names, filepath.Base(p))
				}
				fmt.Fprintf(logw, "+ go %s\n", strings.Join(args, " "))
				cmd := exec.CommandContext(ctx, toolcache.GoTool(), args...)
				cmd.Dir = os.TempDir()
				cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "CGO_ENABLED=0", "GOWORK=off")
				cmd.Stdout, cmd.Stderr = logw, logw
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("building %s %s: go %s: %w", name, version, strings.Join(args, " "), err)
				}
			}
			// The marker last: its presence means every binary is in place.
			for i, n := range names {
				if n == marker {
					names = append(append(names[:i:i], names[i+1:]...), n)
					break
				}
			}
			for _, n := range names {
				if err := os.Rename(filepath.Join(tmp, n), filepath.Join(dir, n)); err != nil {
					return err
				}
			}
			_ = os.Remove(tmp)
			fmt.Fprintf(logw, "built %s %s in %s\n", name, version, time.Since(start).Round(time.Second))
			return nil
		}}
}

// containerdTool: containerd and ctr, and the runc shim without its gRPC server
// (tag no_grpc: the shim speaks ttrpc to containerd 2.x).
var containerdTool = installTool("containerd", ContainerdVersion, "containerd",
	goInstall{pkgs: []string{containerdModule + "/cmd/containerd", containerdModule + "/cmd/ctr"}},
	goInstall{pkgs: []string{containerdModule + "/cmd/containerd-shim-runc-v2"}, tags: "no_grpc"},
)

// cniTool: the four CNI plugins the node's network uses.
var cniTool = installTool("cni-plugins", CNIPluginsVersion, "portmap",
	goInstall{pkgs: []string{
		cniModule + "/plugins/main/bridge",
		cniModule + "/plugins/ipam/host-local",
		cniModule + "/plugins/main/loopback",
		cniModule + "/plugins/meta/portmap",
	}},
)

// Binaries are the programs a node runs.
type Binaries struct {
	// KubeDir holds kube-apiserver, kube-controller-manager, kube-scheduler,
	// kubelet, kube-proxy and kubectl (kubeapi.NodeCommands).
	KubeDir string
	// ContainerdDir holds containerd, ctr and containerd-shim-runc-v2.
	ContainerdDir string
	// CNIDir holds the CNI plugins bridge, host-local, loopback and portmap.
	CNIDir string
	// CoreDNS is the cluster DNS server (test/coredns).
	CoreDNS string
	// Etcd, Runc, Nft, Unshare, Nsenter and Mount are found on PATH (Debian
	// packages etcd-server, runc, nftables, util-linux, mount).
	Etcd, Runc, Nft, Unshare, Nsenter, Mount string
}

// Kube returns the path of one of the kubeapi.NodeCommands.
func (b *Binaries) Kube(name string) string { return filepath.Join(b.KubeDir, name) }

// BuildsCached reports whether every built component is in the cache already.
func BuildsCached() bool {
	_, err := os.Stat(filepath.Join(kubeapi.NodeBinDir(), "kubectl"))
	return err == nil && toolcache.IsExecutable(containerdTool.Path()) && toolcache.IsExecutable(cniTool.Path()) &&
		toolcache.IsExecutable(coredns.CacheDir()+"/coredns")
}

// EnsureBinaries builds what is not cached yet (Kubernetes about 15 minutes on 2 cores,
// containerd 2-3, CNI plugins 1, CoreDNS 2) and finds the rest on PATH.
func EnsureBinaries(ctx context.Context, logw io.Writer) (*Binaries, error) {
	if logw == nil {
		logw = io.Discard
	}
	var b Binaries
	var err error
	var errs []error
	for _, p := range []struct {
		name string
		dst  *string
	}{{"etcd", &b.Etcd}, {"runc", &b.Runc}, {"nft", &b.Nft}, {"unshare", &b.Unshare}, {"nsenter", &b.Nsenter}, {"mount", &b.Mount}} {
		if *p.dst, err = exec.LookPath(p.name); err != nil {
			errs = append(errs, fmt.Errorf("%s not on PATH (make test-deps installs it)", p.name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if b.ContainerdDir, err = ensureDir(ctx, containerdTool, logw); err != nil {
		return nil, err
	}
	if b.CNIDir, err = ensureDir(ctx, cniTool, logw); err != nil {
		return nil, err
	}
	if b.CoreDNS, err = coredns.EnsureBinary(ctx, logw); err != nil {
		return nil, err
	}
	if b.KubeDir, err = kubeapi.EnsureNodeBinaries(ctx, logw); err != nil {
		return nil, err
	}
	return &b, nil
}

func ensureDir(ctx context.Context, t toolcache.Tool, logw io.Writer) (string, error) {
	if _, err := t.Ensure(ctx, logw); err != nil {
		return "", err
	}
	return t.Dir(), nil
}
