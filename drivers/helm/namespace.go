package helm

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/drivers/workload"
)

// EnsureNamespace creates the namespace with labels (and the managed
// label), or gives an existing managed one those labels. A namespace of
// that name the agent did not make is refused with ErrNotManaged, and one
// being deleted is an error until it is gone.
func (c *Client) EnsureNamespace(ctx context.Context, name string, lbls map[string]string) (state.Namespace, error) {
	want := maps.Clone(lbls)
	if want == nil {
		want = map[string]string{}
	}
	want[workload.LabelManaged] = workload.ManagedValue
	ns, err := c.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ns, err = c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: want},
		}, metav1.CreateOptions{})
		if err == nil {
			return namespaceOf(ns), nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return state.Namespace{}, fmt.Errorf("create namespace %s: %w", name, err)
		}
		// Made meanwhile (another release of the same guid): check it.
		ns, err = c.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return state.Namespace{}, fmt.Errorf("read namespace %s: %w", name, err)
	}
	if !managed(ns.Labels) {
		return namespaceOf(ns), fmt.Errorf("namespace %s: %w", name, ErrNotManaged)
	}
	if ns.DeletionTimestamp != nil {
		return namespaceOf(ns), fmt.Errorf("namespace %s is being deleted since %s; it is made again once it is gone", name, ns.DeletionTimestamp.Format(time.RFC3339))
	}
	if labels.SelectorFromSet(want).Matches(labels.Set(ns.Labels)) {
		return namespaceOf(ns), nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": want}})
	ns, err = c.kube.CoreV1().Namespaces().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return state.Namespace{}, fmt.Errorf("label namespace %s: %w", name, err)
	}
	return namespaceOf(ns), nil
}

// DeleteNamespace deletes a namespace the agent made, with everything in
// it. A missing one is no error; one without the managed label is refused.
func (c *Client) DeleteNamespace(ctx context.Context, name string) error {
	ns, err := c.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read namespace %s: %w", name, err)
	}
	if !managed(ns.Labels) {
		return fmt.Errorf("namespace %s: %w", name, ErrNotManaged)
	}
	if ns.DeletionTimestamp != nil {
		return nil
	}
	bg := metav1.DeletePropagationBackground
	err = c.kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{
		PropagationPolicy: &bg,
		// Only the namespace read above: never one made again meanwhile.
		Preconditions: &metav1.Preconditions{UID: &ns.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

// Namespaces lists the managed namespaces whose labels carry selector,
// sorted by name.
func (c *Client) Namespaces(ctx context.Context, selector map[string]string) ([]state.Namespace, error) {
	sel := maps.Clone(selector)
	if sel == nil {
		sel = map[string]string{}
	}
	sel[workload.LabelManaged] = workload.ManagedValue
	list, err := c.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	out := make([]state.Namespace, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, namespaceOf(&list.Items[i]))
	}
	slices.SortFunc(out, func(a, b state.Namespace) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func namespaceOf(ns *corev1.Namespace) state.Namespace {
	phase := string(ns.Status.Phase)
	if ns.DeletionTimestamp != nil {
		phase = string(corev1.NamespaceTerminating)
	}
	return state.Namespace{Name: ns.Name, Phase: phase, Created: ns.CreationTimestamp.Time, Labels: maps.Clone(ns.Labels)}
}

// LabelPod sets (value != "") or removes (value == "") one label of a
// pod: the master marks its own pod so that the chart's Service routes to
// it. Only the pod's labels change.
func (c *Client) LabelPod(ctx context.Context, namespace, pod, key, value string) error {
	var v any = value
	if value == "" {
		v = nil // a merge patch removes a key set to null
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: v}}})
	_, err := c.kube.CoreV1().Pods(namespace).Patch(ctx, pod, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("label pod %s/%s: %w", namespace, pod, err)
	}
	return nil
}
