package kube

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Uninstalled tells an agent's final stop from a hand-over: it reports
// whether the DaemonSet namespace/name that runs the agent is gone or being
// deleted (uninstall), as opposed to still there (a rolling update, a
// restarted pod, a node reboot). Answers that only an uninstall gives count as
// gone too: the agent's ServiceAccount deleted (401) or its RBAC removed (403)
// once the DaemonSet object is. Any other error (API server unreachable,
// timeout) is returned: the caller keeps its state, failing closed.
func Uninstalled(ctx context.Context, kc kubernetes.Interface, namespace, name string) (gone bool, why string, err error) {
	ds, err := kc.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, fmt.Sprintf("DaemonSet %s/%s not found", namespace, name), nil
	case apierrors.IsUnauthorized(err):
		return true, "the agent's credentials were revoked (ServiceAccount deleted)", nil
	case apierrors.IsForbidden(err):
		return true, "the agent's permissions were removed (RBAC deleted)", nil
	case err != nil:
		return false, "", fmt.Errorf("kube: get DaemonSet %s/%s: %w", namespace, name, err)
	case ds.DeletionTimestamp != nil:
		return true, fmt.Sprintf("DaemonSet %s/%s is being deleted", namespace, name), nil
	}
	return false, "", nil
}
