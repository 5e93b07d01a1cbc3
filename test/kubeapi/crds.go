package kubeapi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// CRDs is the resource of CustomResourceDefinitions.
var CRDs = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// RepoFiles returns the files matching pattern (a glob relative to the
// repository root, found from the working directory up).
func RepoFiles(pattern string) []string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			m, _ := filepath.Glob(filepath.Join(d, pattern))
			return m
		}
	}
	return nil
}

// ApplyCRDs creates the CRDs of files and waits (at most a minute) until each
// is established and its resource lists.
func ApplyCRDs(ctx context.Context, dyn dynamic.Interface, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("no CRD files")
	}
	var crds []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := dyn.Resource(CRDs).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create CRD %s: %w", f, err)
		}
		crds = append(crds, u)
	}
	deadline := time.Now().Add(time.Minute)
	for _, crd := range crds {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		if len(versions) == 0 {
			return fmt.Errorf("CRD %s has no versions", crd.GetName())
		}
		version, _ := versions[0].(map[string]any)["name"].(string)
		gvr := schema.GroupVersionResource{Group: group, Version: version, Resource: plural}
		for {
			_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not served after a minute: %w", gvr.Resource, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}
