package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/egressd/egressd/test/kubeapi"
)

// EgressdNamespace and EgressdDaemonSet are where deploy/ and the chart put the agent.
const (
	EgressdNamespace = "egressd"
	EgressdDaemonSet = "egressd"
)

// InstallKustomize installs egressd from the kustomize base dir (deploy/ of the
// repository, or an overlay of it) with `kubectl apply -k` and waits until the
// DaemonSet's pod on the node is ready.
func (c *Cluster) InstallKustomize(ctx context.Context, dir string) error {
	if _, err := c.Kubectl(ctx, "apply", "-k", dir); err != nil {
		return err
	}
	return c.WaitDaemonSetReady(ctx, EgressdNamespace, EgressdDaemonSet, 3*time.Minute)
}

// UninstallKustomize deletes what InstallKustomize applied and waits for it to go.
func (c *Cluster) UninstallKustomize(ctx context.Context, dir string) error {
	_, err := c.Kubectl(ctx, "delete", "-k", dir, "--ignore-not-found", "--wait=true", "--timeout=3m")
	return err
}

// Helm runs helm against the cluster (the admin kubeconfig).
func (c *Cluster) Helm(ctx context.Context, args ...string) ([]byte, error) {
	helm, err := exec.LookPath("helm")
	if err != nil {
		return nil, fmt.Errorf("helm not on PATH (make test-deps installs it): %w", err)
	}
	return run(ctx, helm, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
}

// InstallHelm installs egressd as the README says: `kubectl apply -f
// deploy/namespace.yaml` (Helm cannot label the namespace it creates for Pod Security),
// then the chart deploy/helm/egressd as release "egressd" with the given --set values;
// it waits until the agent is ready.
func (c *Cluster) InstallHelm(ctx context.Context, deployDir string, set ...string) error {
	if _, err := c.Kubectl(ctx, "apply", "-f", filepath.Join(deployDir, "namespace.yaml")); err != nil {
		return err
	}
	args := []string{"install", "egressd", filepath.Join(deployDir, "helm", "egressd"), "-n", EgressdNamespace, "--wait", "--timeout", "3m"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	if _, err := c.Helm(ctx, args...); err != nil {
		return err
	}
	return c.WaitDaemonSetReady(ctx, EgressdNamespace, EgressdDaemonSet, 3*time.Minute)
}

// WaitDaemonSetReady waits until the DaemonSet's rollout is complete.
func (c *Cluster) WaitDaemonSetReady(ctx context.Context, ns, name string, timeout time.Duration) error {
	_, err := c.Kubectl(ctx, "-n", ns, "rollout", "status", "daemonset/"+name, "--timeout="+timeout.String())
	return err
}

// Summary tells a person how to reach the cluster.
func (c *Cluster) Summary(repoRoot string) string {
	rel := func(p string) string {
		if r, err := filepath.Rel(repoRoot, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
		return p
	}
	kubectl := rel(c.Bin.Kube("kubectl"))
	var b strings.Builder
	fmt.Fprintf(&b, "cluster up: node %s (Kubernetes %s, containerd %s), API server https://127.0.0.1:%d\n", NodeName, kubeapi.Version, ContainerdVersion, c.APIPort)
	fmt.Fprintf(&b, "  export KUBECONFIG=%s\n", rel(c.Kubeconfig))
	fmt.Fprintf(&b, "  kubectl get pods -A          # any kubectl works; the matching one: %s\n", kubectl)
	fmt.Fprintf(&b, "  the node's network namespace: ip netns exec %s nft list ruleset\n", c.NodeNS)
	fmt.Fprintf(&b, "  external names (DNS %s, HTTP :80): allowed.example.test, denied.example.test, other.example.test\n", ExternalDNS)
	fmt.Fprintf(&b, "  component logs: %s/logs/\n", rel(c.Dir))
	b.WriteString("  tear down: make cluster-down\n")
	return b.String()
}
