package kubepods

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/agentproj/agent/drivers/workload"
)

// Pod is what the monitor labels a pod's series with.
type Pod struct {
	UID, Name, Namespace string
	// QoS is Kubernetes' class: Guaranteed, Burstable or BestEffort.
	QoS string
	// OwnerKind and OwnerName are the pod's controller: a ReplicaSet's
	// Deployment when it has one, else the ReplicaSet, a StatefulSet, a
	// DaemonSet, a Job...; empty for a bare pod.
	OwnerKind, OwnerName string
	// GUID is the agent.guid label of the pod's namespace.
	GUID string
	// Containers maps a container id (without the runtime:// prefix) to
	// the container's name, from the pod's status.
	Containers map[string]string
	// Running: the pod's phase is Running and every container of its spec
	// runs, as the kubelet reported last. Finished: its phase is Succeeded
	// or Failed (it is not meant to run again).
	Running, Finished bool
}

// Watch keeps the pods of one node from a watch of the API.
type Watch struct {
	kube    kubernetes.Interface
	node    string
	log     *slog.Logger
	metrics *metrics
	resync  time.Duration

	mu     sync.RWMutex
	pods   map[string]*Pod   // by uid
	mirror map[string]string // static pod's config hash -> mirror pod's uid
	guids  map[string]string // namespace -> guid
	owners map[string]owner  // "ns/replicaset" -> its Deployment
	synced chan struct{}

	// ReplicaSets whose Deployment is still to be read ("ns/replicaset"),
	// by the resolver, so that a slow API never holds the pod events.
	unresolved map[string]bool // guarded by mu
	resolveCh  chan struct{}   // nudges the resolver
	resolveMu  sync.Mutex      // one resolve pass at a time
	// getTimeout bounds one read of a ReplicaSet, and the first pass.
	getTimeout time.Duration
}

type owner struct{ kind, name string }

// mirrorAnnotation holds a static pod's hash on its mirror pod: the
// kubelet names the pod's cgroup after the hash, not the mirror's uid.
const mirrorAnnotation = "kubernetes.io/config.mirror"

// NewWatch prepares a watch of node's pods; nothing is read until Run.
func NewWatch(kube kubernetes.Interface, node string, log *slog.Logger, m *metrics) *Watch {
	return &Watch{
		kube: kube, node: node, log: log, metrics: m,
		pods: map[string]*Pod{}, mirror: map[string]string{}, guids: map[string]string{}, owners: map[string]owner{},
		synced: make(chan struct{}), unresolved: map[string]bool{}, resolveCh: make(chan struct{}, 1),
		getTimeout: 10 * time.Second,
	}
}

// Synced closes once the first list of pods and namespaces is in.
func (w *Watch) Synced() <-chan struct{} { return w.synced }

// Lookup is the pod of a cgroup's uid (a static pod's hash finds its
// mirror pod), with its namespace's guid.
func (w *Watch) Lookup(uid string) (Pod, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	p := w.pods[uid]
	if p == nil {
		if m, ok := w.mirror[uid]; ok {
			p = w.pods[m]
		}
	}
	if p == nil {
		return Pod{}, false
	}
	return w.withGUID(p), true
}

// withGUID is a copy of p with its namespace's guid. w.mu is held.
func (w *Watch) withGUID(p *Pod) Pod {
	out := *p
	out.GUID = w.guids[p.Namespace]
	return out
}

// Pods returns the pods of the node that are meant to run (not finished),
// each with its namespace's guid, in no order.
func (w *Watch) Pods() []Pod {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]Pod, 0, len(w.pods))
	for _, p := range w.pods {
		if !p.Finished {
			out = append(out, w.withGUID(p))
		}
	}
	return out
}

// Len is the number of pods the watch holds.
func (w *Watch) Len() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.pods)
}

// Run watches the node's pods and every namespace until ctx ends. It
// lists once, then follows the watch; the informer relists only when the
// watch breaks for longer than the API keeps history.
func (w *Watch) Run(ctx context.Context) error {
	podInf := informers.NewSharedInformerFactoryWithOptions(w.kube, w.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", w.node).String()
		})).Core().V1().Pods().Informer()
	nsInf := informers.NewSharedInformerFactory(w.kube, w.resync).Core().V1().Namespaces().Informer()
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.setPod,
		UpdateFunc: func(_, o any) { w.setPod(o) },
		DeleteFunc: w.deletePod,
	}); err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}
	if _, err := nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.setNamespace,
		UpdateFunc: func(_, o any) { w.setNamespace(o) },
		DeleteFunc: w.deleteNamespace,
	}); err != nil {
		return fmt.Errorf("watch namespaces: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.resolveCh:
				w.resolve(ctx)
			}
		}
	}()
	for _, inf := range []cache.SharedIndexInformer{podInf, nsInf} {
		_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			w.metrics.errors.WithLabelValues("watch").Inc()
			w.log.Warn("pod monitor: the Kubernetes watch broke; it resumes", "err", err)
		})
		wg.Add(1)
		go func() { defer wg.Done(); inf.RunWithContext(ctx) }()
	}
	w.log.Info("pod monitor: watching the pods of this node", "node", w.node)
	if cache.WaitForCacheSync(ctx.Done(), podInf.HasSynced, nsInf.HasSynced) {
		// The listed pods' owners, before they are served: getTimeout at
		// most, the rest is served under their ReplicaSets.
		rctx, cancel := context.WithTimeout(ctx, w.getTimeout)
		w.resolve(rctx)
		cancel()
		close(w.synced)
		w.log.Info("pod monitor: pods listed", "pods", w.Len())
	}
	wg.Wait()
	return nil
}

func (w *Watch) setPod(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok || p.UID == "" {
		w.metrics.errors.WithLabelValues("pod").Inc()
		return
	}
	if p.Spec.NodeName != w.node {
		return
	}
	pod := &Pod{
		UID: string(p.UID), Name: p.Name, Namespace: p.Namespace, QoS: string(p.Status.QOSClass),
		Containers: map[string]string{},
	}
	if c := metav1.GetControllerOf(p); c != nil {
		pod.OwnerKind, pod.OwnerName = c.Kind, c.Name
	}
	pod.Finished = p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	pod.Running = p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) >= len(p.Spec.Containers)
	for _, cs := range p.Status.ContainerStatuses {
		pod.Running = pod.Running && cs.State.Running != nil
	}
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if _, id, ok := strings.Cut(cs.ContainerID, "://"); ok && id != "" {
				pod.Containers[id] = cs.Name
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if pod.OwnerKind == "ReplicaSet" {
		// Served under its ReplicaSet until the resolver has read the
		// ReplicaSet's Deployment.
		key := p.Namespace + "/" + pod.OwnerName
		if o, ok := w.owners[key]; ok {
			pod.OwnerKind, pod.OwnerName = o.kind, o.name
		} else if !w.unresolved[key] {
			w.unresolved[key] = true
			select {
			case w.resolveCh <- struct{}{}:
			default:
			}
		}
	}
	w.pods[pod.UID] = pod
	if h := p.Annotations[mirrorAnnotation]; h != "" {
		w.mirror[h] = pod.UID
	}
}

// resolve reads the Deployment of every unresolved ReplicaSet and names
// their pods after it. A ReplicaSet that cannot be read is counted and
// keeps naming its pods; the next update of one of them asks again.
func (w *Watch) resolve(ctx context.Context) {
	w.resolveMu.Lock()
	defer w.resolveMu.Unlock()
	w.mu.Lock()
	keys := slices.Collect(maps.Keys(w.unresolved))
	clear(w.unresolved)
	w.mu.Unlock()
	for _, key := range keys {
		ns, rs, _ := strings.Cut(key, "/")
		o, ok := w.deploymentOf(ctx, ns, rs)
		if !ok || o == (owner{"ReplicaSet", rs}) {
			continue
		}
		w.mu.Lock()
		for _, pod := range w.pods {
			if pod.Namespace == ns && pod.OwnerKind == "ReplicaSet" && pod.OwnerName == rs {
				pod.OwnerKind, pod.OwnerName = o.kind, o.name
			}
		}
		w.mu.Unlock()
	}
}

// deploymentOf is the Deployment that owns a ReplicaSet, read once per
// ReplicaSet through the API (a GET, not a watch of every ReplicaSet);
// a ReplicaSet without one is its own owner.
func (w *Watch) deploymentOf(ctx context.Context, ns, rs string) (owner, bool) {
	key := ns + "/" + rs
	w.mu.RLock()
	o, ok := w.owners[key]
	w.mu.RUnlock()
	if ok {
		return o, true
	}
	gctx, cancel := context.WithTimeout(ctx, w.getTimeout)
	defer cancel()
	r, err := w.kube.AppsV1().ReplicaSets(ns).Get(gctx, rs, metav1.GetOptions{})
	if err != nil {
		// Counted; the pod keeps its ReplicaSet and the next update of
		// the pod asks again.
		w.metrics.errors.WithLabelValues("replicaset").Inc()
		w.log.Debug("pod monitor: cannot read a pod's ReplicaSet", "namespace", ns, "replicaset", rs, "err", err)
		return owner{}, false
	}
	o = owner{"ReplicaSet", rs}
	if c := metav1.GetControllerOf(r); c != nil && c.Kind == "Deployment" {
		o = owner{c.Kind, c.Name}
	}
	w.mu.Lock()
	w.owners[key] = o
	w.mu.Unlock()
	return o, true
}

func (w *Watch) deletePod(o any) {
	p, ok := objectOf[*corev1.Pod](w, o, "pod")
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pods, string(p.UID))
	if h := p.Annotations[mirrorAnnotation]; h != "" && w.mirror[h] == string(p.UID) {
		delete(w.mirror, h)
	}
	// Forget the ReplicaSet once no pod of it is left: a rollout makes a
	// new one, and the map must not grow with every rollout.
	if c := metav1.GetControllerOf(p); c != nil && c.Kind == "ReplicaSet" {
		key := p.Namespace + "/" + c.Name
		for _, q := range w.pods {
			if q.Namespace == p.Namespace && w.owners[key] == (owner{q.OwnerKind, q.OwnerName}) {
				return
			}
		}
		delete(w.owners, key)
	}
}

func (w *Watch) setNamespace(o any) {
	ns, ok := objectOf[*corev1.Namespace](w, o, "namespace")
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if g := ns.Labels[workload.LabelGUID]; g != "" {
		w.guids[ns.Name] = g
	} else {
		delete(w.guids, ns.Name)
	}
}

func (w *Watch) deleteNamespace(o any) {
	ns, ok := objectOf[*corev1.Namespace](w, o, "namespace")
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.guids, ns.Name)
}

// objectOf is an informer's object as T (a deleted one's last known state
// when the watch missed its deletion); anything else is counted under what.
func objectOf[T any](w *Watch, o any, what string) (T, bool) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	v, ok := o.(T)
	if !ok {
		w.metrics.errors.WithLabelValues(what).Inc()
	}
	return v, ok
}
