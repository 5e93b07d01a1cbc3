package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
)

// kubeConfig holds the cluster-mode flags (docs/kubernetes.md). Cluster mode is on
// when neither --policies nor --workloads is given.
type kubeConfig struct {
	Kubeconfig     string
	DNSService     string
	PolicyStatus   bool
	LeaseNamespace string
	KubeSyncWait   time.Duration
	DaemonSet      string // uninstall.go
}

func registerKubeFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "cluster mode: kubeconfig file (default $KUBECONFIG; empty: in-cluster config from the pod's service account)")
	fs.StringVar(&c.DNSService, "dns-service", "kube-system/kube-dns", "cluster mode: the cluster DNS Service, namespace/name, whose cluster IPs --intercept-dns auto intercepts (empty: not watched)")
	fs.BoolVar(&c.PolicyStatus, "policy-status", true, "cluster mode: write Accepted/Invalid conditions to FirewallPolicy and ClusterFirewallPolicy status (only the holder of the lease writes)")
	fs.StringVar(&c.LeaseNamespace, "lease-namespace", os.Getenv("POD_NAMESPACE"), "cluster mode: namespace of the egressd-status Lease that elects the one status writer (default $POD_NAMESPACE; empty: every agent writes)")
	fs.StringVar(&c.DaemonSet, "daemonset", "", "cluster mode: the DaemonSet running this agent, namespace/name; when it is gone as the agent stops (uninstall), the agent removes its nftables table, DNS interception and local interface instead of leaving them for the next agent (empty: always leave them)")
	fs.DurationVar(&c.KubeSyncWait, "kube-sync-timeout", 5*time.Minute, "cluster mode: how long to wait for the first complete sync of the API caches before giving up (the kernel keeps its previous state meanwhile)")
}

// compilerScope scopes the compiler to this node's pods in cluster mode
// (docs/scale.md); standalone mode compiles every workload of the files.
func (c *Config) compilerScope() []policy.CompilerOption {
	if !c.kubeMode() {
		return nil
	}
	return []policy.CompilerOption{policy.ForNode(c.NodeName)}
}

// kubeMode reports whether policies come from the Kubernetes API.
func (c *Config) kubeMode() bool { return c.Policies == "" && c.Workloads == "" }

func (c *Config) validateKube() error {
	if !c.kubeMode() {
		if c.interceptAuto() {
			return errors.New("--intercept-dns auto needs cluster mode (no --policies/--workloads)")
		}
		return nil
	}
	var errs []error
	if c.Kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		errs = append(errs, errors.New("--policies and/or --workloads are needed in standalone mode; cluster mode needs --kubeconfig or an in-cluster environment (KUBERNETES_SERVICE_HOST)"))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is needed in cluster mode"))
	}
	if c.interceptAuto() && c.DNSService == "" {
		errs = append(errs, errors.New("--intercept-dns auto needs --dns-service"))
	}
	if ns, name, ok := strings.Cut(c.DaemonSet, "/"); c.DaemonSet != "" && (!ok || ns == "" || name == "") {
		errs = append(errs, fmt.Errorf("--daemonset %q: want namespace/name", c.DaemonSet))
	}
	if c.KubeSyncWait <= 0 {
		errs = append(errs, errors.New("--kube-sync-timeout must be positive"))
	}
	return errors.Join(errs...)
}

func (c *Config) restConfig() (*rest.Config, error) {
	if c.Kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
}

// startKube starts the Kubernetes source and waits for its first complete sync:
// nothing is compiled from a partial cache (the kernel keeps what the previous
// agent left until then). Later changes call requestSync.
func (a *Agent) startKube(ctx context.Context) error {
	rc, err := a.cfg.restConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	rc.UserAgent = "egressd/" + a.cfg.NodeName
	src, err := kube.New(rc, a.store, kube.Options{
		NodeName:     a.cfg.NodeName,
		DNSService:   a.cfg.DNSService,
		NoDNSService: a.cfg.DNSService == "",
		Log:          a.log.With("component", "kube"),
		Status: kube.StatusOptions{
			Enabled:        a.cfg.PolicyStatus,
			LeaseNamespace: a.cfg.LeaseNamespace,
			Identity:       a.cfg.NodeName,
		},
	})
	if err != nil {
		return err
	}
	a.kube = src
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, a.requestSync) }()
	t := time.NewTimer(a.cfg.KubeSyncWait)
	defer t.Stop()
	for !src.Synced() {
		select {
		case err := <-errc:
			return fmt.Errorf("kubernetes source: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("kubernetes caches not synced after %s", a.cfg.KubeSyncWait)
		case <-time.After(20 * time.Millisecond):
		}
	}
	go func() {
		if err := <-errc; err != nil && ctx.Err() == nil {
			a.log.Error("kubernetes source stopped", "err", err)
		}
	}()
	return nil
}
