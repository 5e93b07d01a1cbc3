// Package deploy holds the Kubernetes manifests; this test decodes every one of
// them strictly into its API type and checks what the install promises.
package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/testenv"
)

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// docs splits a YAML file into its non-empty documents.
func docs(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range docSep.Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// decode decodes one document strictly into the type of its kind.
func decode(t *testing.T, where string, doc []byte) any {
	t.Helper()
	var meta struct{ APIVersion, Kind string }
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var obj any
	switch meta.APIVersion + " " + meta.Kind {
	case "v1 Namespace":
		obj = &corev1.Namespace{}
	case "v1 ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "apps/v1 DaemonSet":
		obj = &appsv1.DaemonSet{}
	case "rbac.authorization.k8s.io/v1 ClusterRole", "rbac.authorization.k8s.io/v1 Role":
		obj = &rbacv1.ClusterRole{}
	case "rbac.authorization.k8s.io/v1 ClusterRoleBinding", "rbac.authorization.k8s.io/v1 RoleBinding":
		obj = &rbacv1.ClusterRoleBinding{}
	case policy.APIVersion + " " + policy.KindFirewallPolicy:
		obj = &policy.FirewallPolicy{}
	case policy.APIVersion + " " + policy.KindClusterFirewallPolicy:
		obj = &policy.ClusterFirewallPolicy{}
	case "apiextensions.k8s.io/v1 CustomResourceDefinition", "kustomize.config.k8s.io/v1beta1 Kustomization":
		obj = &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.(*unstructured.Unstructured).Object); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		return obj
	default:
		t.Fatalf("%s: unexpected %s %s", where, meta.APIVersion, meta.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s: %s: %v", where, meta.Kind, err)
	}
	return obj
}

// TestManifestsDecode decodes every manifest under deploy/ (not the Helm templates)
// strictly, validates the policies, and checks the DaemonSet's promises.
func TestManifestsDecode(t *testing.T) {
	var files []string
	filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (p == "helm" || p == "examples") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return nil
	})
	// The ConfigMap is generated from egressd.env (TestKustomizeConfigRollsPods).
	kinds := map[string]int{}
	var ds *appsv1.DaemonSet
	var roles []*rbacv1.ClusterRole
	for _, f := range files {
		for i, d := range docs(t, f) {
			o := decode(t, f, d)
			switch o := o.(type) {
			case *appsv1.DaemonSet:
				ds = o
			case *rbacv1.ClusterRole:
				roles = append(roles, o)
			case *policy.FirewallPolicy:
				if err := policy.ValidateFirewallPolicy(o); err != nil {
					t.Errorf("%s[%d]: %v", f, i, err)
				}
			case *policy.ClusterFirewallPolicy:
				if err := policy.ValidateClusterFirewallPolicy(o); err != nil {
					t.Errorf("%s[%d]: %v", f, i, err)
				}
			}
			var meta struct{ Kind string }
			yaml.Unmarshal(d, &meta)
			kinds[meta.Kind]++
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "DaemonSet", "CustomResourceDefinition", "Kustomization", "FirewallPolicy", "ClusterFirewallPolicy"} {
		if kinds[k] == 0 {
			t.Errorf("no %s manifest in deploy/", k)
		}
	}
	checkDaemonSet(t, ds)
	for _, r := range roles {
		for _, rule := range r.Rules {
			for _, v := range rule.Verbs {
				if v == "*" || v == "delete" || v == "deletecollection" || (v == "create" && !slices.Equal(rule.Resources, []string{"leases"})) {
					t.Errorf("role %s grants %s on %v: not least privilege", r.Name, v, rule.Resources)
				}
			}
			if slices.Contains(rule.Resources, "secrets") || slices.Contains(rule.Resources, "*") {
				t.Errorf("role %s grants %v", r.Name, rule.Resources)
			}
		}
	}
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("DaemonSet: not hostNetwork")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("DaemonSet: %d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatal("DaemonSet: privileged or no capabilities")
	}
	var add []string
	for _, cp := range sc.Capabilities.Add {
		add = append(add, string(cp))
	}
	slices.Sort(add)
	if !slices.Equal(add, []string{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("DaemonSet capabilities %v, want exactly NET_ADMIN and NET_RAW", add)
	}
	var drop []string
	for _, cp := range sc.Capabilities.Drop {
		drop = append(drop, string(cp))
	}
	if eff := testenv.EffectiveCaps(add, drop); !slices.Equal(eff, []string{"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"}) {
		t.Errorf("DaemonSet effective capabilities %v, want NET_ADMIN, NET_BIND_SERVICE (port 53) and NET_RAW only", eff)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("DaemonSet: liveness probe is not GET /healthz")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("DaemonSet: readiness probe is not GET /readyz")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Error("DaemonSet: no resource requests")
	}
	var nodeName bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeName = true
		}
	}
	if !nodeName {
		t.Error("DaemonSet: NODE_NAME does not come from spec.nodeName")
	}
	if !slices.Contains(c.Args, "--node-name=$(NODE_NAME)") {
		t.Errorf("DaemonSet args %v lack --node-name=$(NODE_NAME)", c.Args)
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--policies") || strings.HasPrefix(a, "--workloads") {
			t.Errorf("DaemonSet arg %s selects standalone mode", a)
		}
	}
}

// TestKustomization: every resource of the kustomization exists, and every
// manifest file (but the samples) is in it, and kubectl renders it.
func TestKustomization(t *testing.T) {
	var k struct{ Resources []string }
	b, _ := os.ReadFile("kustomization.yaml")
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(r); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
		}
	}
	all, _ := filepath.Glob("*.yaml")
	crds, _ := filepath.Glob("crds/*.yaml")
	for _, f := range append(all, crds...) {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not in kustomization.yaml", f)
		}
	}
	kubectl := testenv.RequireTools(t, "kubectl")[0] // make test installs it
	out, err := exec.Command(kubectl, "kustomize", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	if n := bytes.Count(out, []byte("\nkind: ")) + bytes.Count(out[:min(len(out), 6)], []byte("kind:")); n < 10 {
		t.Errorf("kubectl kustomize rendered %d objects", n)
	}
}

// TestHelmChart: the chart's CRDs are deploy/crds, its files parse, and (when helm
// is on PATH) it renders into the same kinds as the kustomize base.
func TestHelmChart(t *testing.T) {
	crds, _ := filepath.Glob("crds/*.yaml")
	for _, f := range crds {
		a, _ := os.ReadFile(f)
		chartCopy := filepath.Join("helm", "egressd", f)
		if filepath.Base(f) == cnpCRD {
			// Installed by a template behind clusterNetworkPolicy.installCRD,
			// not from the chart's unconditional crds/.
			chartCopy = filepath.Join("helm", "egressd", "files", cnpCRD)
		}
		b, err := os.ReadFile(chartCopy)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from deploy/%s: copy it after make generate", chartCopy, f)
		}
	}
	if _, err := os.Stat(filepath.Join("helm", "egressd", "crds", cnpCRD)); err == nil {
		t.Errorf("helm/egressd/crds/%s: the ClusterNetworkPolicy CRD must stay behind clusterNetworkPolicy.installCRD", cnpCRD)
	}
	for _, f := range []string{"helm/egressd/Chart.yaml", "helm/egressd/values.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	helm := testenv.RequireTools(t, "helm")[0] // make test installs it
	out, err := exec.Command(helm, "template", "egressd", "helm/egressd", "--namespace", "egressd").CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	var ds *appsv1.DaemonSet
	for i, d := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(stripComments(d)) == "" {
			continue
		}
		if o, ok := decode(t, "helm template", []byte(d)).(*appsv1.DaemonSet); ok {
			ds = o
		}
		_ = i
	}
	checkDaemonSet(t, ds)
	// The upstream ClusterNetworkPolicy CRD: installed by default, kept on
	// uninstall, left out with installCRD=false.
	if !bytes.Contains(out, []byte("name: clusternetworkpolicies.policy.networking.k8s.io")) || !bytes.Contains(out, []byte("helm.sh/resource-policy: keep")) {
		t.Errorf("helm template: no ClusterNetworkPolicy CRD with helm.sh/resource-policy: keep")
	}
	off, err := exec.Command(helm, "template", "egressd", "helm/egressd", "--namespace", "egressd", "--set", "clusterNetworkPolicy.installCRD=false").CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, off)
	}
	if bytes.Contains(off, []byte("clusternetworkpolicies.policy.networking.k8s.io")) {
		t.Errorf("helm template with clusterNetworkPolicy.installCRD=false still renders the CRD")
	}
}

// cnpCRD is the upstream ClusterNetworkPolicy CRD's file name.
const cnpCRD = "policy.networking.k8s.io_clusternetworkpolicies.yaml"

// TestInvalidExamples: every policy under examples/invalid is rejected by the
// agent's own validation (standalone mode, egressctl validate) with the field
// its "# want-field:" comment names; test/kube checks the CRD schema rejects
// each too.
func TestInvalidExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("examples", "invalid", "*.yaml"))
	if err != nil || len(files) < 9 {
		t.Fatalf("examples/invalid: %d files (%v), want the 9 kept there", len(files), err)
	}
	want := regexp.MustCompile(`(?m)^# want-field: (\S+)$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m := want.FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no \"# want-field:\" comment", f)
		}
		objs, err := manifest.DecodeFile(f)
		if err == nil {
			for i := range objs {
				if err = objs[i].Validate(); err != nil {
					break
				}
			}
		}
		switch {
		case err == nil:
			t.Errorf("%s: accepted, want a rejection naming %s", f, m[1])
		case !strings.Contains(err.Error(), string(m[1])+":"):
			t.Errorf("%s: %v, want the field %s", f, err, m[1])
		}
	}
}

// render returns the objects kubectl kustomize renders from dir, by kind.
func kustomize(t *testing.T, dir string) map[string][]any {
	t.Helper()
	kubectl := testenv.RequireTools(t, "kubectl")[0] // make test installs it
	out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
	}
	return byKind(t, "kubectl kustomize", out)
}

// byKind decodes a multi-document YAML stream strictly, by kind.
func byKind(t *testing.T, where string, out []byte) map[string][]any {
	t.Helper()
	objs := map[string][]any{}
	for _, d := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(stripComments(d)) == "" {
			continue
		}
		var meta struct{ Kind string }
		yaml.Unmarshal([]byte(d), &meta)
		objs[meta.Kind] = append(objs[meta.Kind], decode(t, where, []byte(d)))
	}
	return objs
}

// agentConfig returns the DaemonSet and the ConfigMap its envFrom names.
func agentConfig(t *testing.T, where string, objs map[string][]any) (*appsv1.DaemonSet, *corev1.ConfigMap) {
	t.Helper()
	if len(objs["DaemonSet"]) != 1 {
		t.Fatalf("%s: %d DaemonSets", where, len(objs["DaemonSet"]))
	}
	ds := objs["DaemonSet"][0].(*appsv1.DaemonSet)
	c := ds.Spec.Template.Spec.Containers[0]
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil {
		t.Fatalf("%s: DaemonSet envFrom %+v", where, c.EnvFrom)
	}
	for _, o := range objs["ConfigMap"] {
		if cm := o.(*corev1.ConfigMap); cm.Name == c.EnvFrom[0].ConfigMapRef.Name {
			return ds, cm
		}
	}
	t.Fatalf("%s: no ConfigMap %s", where, c.EnvFrom[0].ConfigMapRef.Name)
	return nil, nil
}

// TestKustomizeConfigRollsPods: the kustomize ConfigMap is generated with a
// content hash in its name, so editing deploy/egressd.env changes the
// DaemonSet's pod template and `kubectl apply -k` rolls the agents.
func TestKustomizeConfigRollsPods(t *testing.T) {
	ds, cm := agentConfig(t, "deploy/", kustomize(t, "."))
	if !regexp.MustCompile(`^egressd-config-[a-z0-9]{10}$`).MatchString(cm.Name) {
		t.Errorf("ConfigMap %q: no content hash in the name", cm.Name)
	}
	// A copy of deploy/ with one setting changed.
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", ".", dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	env, err := os.ReadFile("egressd.env")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(env), "EGRESSD_LOG_LEVEL=info", "EGRESSD_LOG_LEVEL=debug", 1)
	if edited == string(env) {
		t.Fatal("egressd.env has no EGRESSD_LOG_LEVEL=info line to edit")
	}
	if err := os.WriteFile(filepath.Join(dir, "egressd.env"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	ds2, cm2 := agentConfig(t, "edited deploy/", kustomize(t, dir))
	if cm2.Data["EGRESSD_LOG_LEVEL"] != "debug" || cm2.Name == cm.Name {
		t.Errorf("edited config: ConfigMap %s log level %q, before %s", cm2.Name, cm2.Data["EGRESSD_LOG_LEVEL"], cm.Name)
	}
	a, _ := yaml.Marshal(ds.Spec.Template)
	b, _ := yaml.Marshal(ds2.Spec.Template)
	if bytes.Equal(a, b) {
		t.Error("the DaemonSet's pod template did not change with the config: apply -k would not roll the agents")
	}
}

// TestShippedDefaultsSteerDNS: both install paths intercept pods' DNS to the
// cluster DNS Service (--intercept-dns auto) and forward to that Service (no
// hard-coded upstream), pass the agent its DaemonSet (uninstall cleanup), and
// grant it read access to exactly that DaemonSet.
func TestShippedDefaultsSteerDNS(t *testing.T) {
	helm := testenv.RequireTools(t, "helm")[0] // make test installs it
	out, err := exec.Command(helm, "template", "egressd", "helm/egressd", "--namespace", "egressd").CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	for where, objs := range map[string]map[string][]any{"kustomize": kustomize(t, "."), "helm": byKind(t, "helm template", out)} {
		ds, cm := agentConfig(t, where, objs)
		want := map[string]string{"EGRESSD_INTERCEPT_DNS": "auto", "EGRESSD_UPSTREAM": "", "EGRESSD_DNS_SERVICE": "kube-system/kube-dns"}
		for k, v := range want {
			if got, ok := cm.Data[k]; !ok || got != v {
				t.Errorf("%s: %s = %q, want %q", where, k, got, v)
			}
		}
		args := ds.Spec.Template.Spec.Containers[0].Args
		for _, a := range []string{"--intercept-dns=$(EGRESSD_INTERCEPT_DNS)", "--upstream=$(EGRESSD_UPSTREAM)", "--daemonset=$(POD_NAMESPACE)/" + ds.Name} {
			if !slices.Contains(args, a) {
				t.Errorf("%s: DaemonSet args lack %s", where, a)
			}
		}
		var canGet bool
		for _, o := range objs["Role"] {
			for _, r := range o.(*rbacv1.ClusterRole).Rules {
				if slices.Equal(r.APIGroups, []string{"apps"}) && slices.Equal(r.Resources, []string{"daemonsets"}) &&
					slices.Equal(r.ResourceNames, []string{ds.Name}) && slices.Equal(r.Verbs, []string{"get"}) {
					canGet = true
				}
			}
		}
		if !canGet {
			t.Errorf("%s: no Role rule to get only the DaemonSet %s", where, ds.Name)
		}
		sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
		if sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.RunAsGroup == nil || *sc.RunAsGroup != 0 {
			t.Errorf("%s: the DaemonSet does not set runAsUser/runAsGroup 0, the image's user", where)
		}
		if ns := objs["Namespace"]; where == "kustomize" && (len(ns) != 1 || ns[0].(*corev1.Namespace).Labels["pod-security.kubernetes.io/enforce"] != "privileged") {
			t.Errorf("kustomize: the egressd namespace is not labelled pod-security.kubernetes.io/enforce=privileged")
		}
	}
}
