package kube_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/egressd/egressd/test/kubeapi"
	"github.com/egressd/egressd/test/testenv"
)

// TestHelmInstallNamespace: `helm install --create-namespace` into a namespace
// without pod-security.kubernetes.io/enforce=privileged is refused with the
// commands that fix it (Helm cannot label the namespace it creates, and the
// agent's pods would be refused under a baseline/restricted Pod Security
// level); after `kubectl apply -f deploy/namespace.yaml` the chart installs,
// upgrades with its CRDs applied from crds/ by kubectl, and uninstalls, against
// a real API server.
func TestHelmInstallNamespace(t *testing.T) {
	tools := testenv.RequireTools(t, "helm", "kubectl") // make test installs them
	helm, kubectl := tools[0], tools[1]
	cp := kubeapi.Start(t)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := context.Background()
	root := repoRoot(t)
	chart := filepath.Join(root, "deploy", "helm", "egressd")
	home := t.TempDir()
	run := func(bin string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+cp.Kubeconfig, "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run(helm, "install", "egressd", chart, "--namespace", "egressd", "--create-namespace")
	if err == nil || !strings.Contains(out, "pod-security.kubernetes.io/enforce=privileged") || !strings.Contains(out, "deploy/namespace.yaml") {
		t.Fatalf("helm install --create-namespace into an unlabelled namespace: err %v, want a refusal naming the label and the fix:\n%s", err, out)
	}
	if out, err := run(kubectl, "apply", "-f", filepath.Join(root, "deploy", "namespace.yaml")); err != nil {
		t.Fatalf("kubectl apply -f deploy/namespace.yaml: %v\n%s", err, out)
	}
	if out, err := run(helm, "install", "egressd", chart, "--namespace", "egressd"); err != nil {
		t.Fatalf("helm install into the labelled namespace: %v\n%s", err, out)
	}
	ns, err := cs.CoreV1().Namespaces().Get(ctx, "egressd", metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Fatalf("namespace egressd: %v, labels %v", err, ns.Labels)
	}
	ds, err := cs.AppsV1().DaemonSets("egressd").Get(ctx, "egressd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := ds.Spec.Template.Annotations["checksum/config"]

	// The documented upgrade: CRDs first (helm upgrade leaves crds/ alone), then
	// the release; a config change rolls the pods (the checksum annotation).
	if out, err := run(kubectl, "apply", "--server-side", "-f", filepath.Join(chart, "crds")); err != nil {
		t.Fatalf("kubectl apply -f crds/: %v\n%s", err, out)
	}
	if out, err := run(helm, "upgrade", "egressd", chart, "--namespace", "egressd", "--set", "config.logLevel=debug"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	ds, err = cs.AppsV1().DaemonSets("egressd").Get(ctx, "egressd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after := ds.Spec.Template.Annotations["checksum/config"]; after == before || after == "" {
		t.Errorf("helm upgrade with another config: pod template checksum %q → %q, want a change (a roll)", before, after)
	}
	if out, err := run(helm, "uninstall", "egressd", "--namespace", "egressd"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	if _, err := cs.AppsV1().DaemonSets("egressd").Get(ctx, "egressd", metav1.GetOptions{}); err == nil {
		t.Error("helm uninstall left the DaemonSet")
	}
}
