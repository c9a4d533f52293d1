package helm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"

	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/drivers/workload"
)

// Release is what should be installed: a chart with values, as a named
// release in a namespace.
type Release struct {
	Name      string
	Namespace string
	Chart     Chart
	// Ref is where the chart came from, for status.
	Ref    ChartRef
	Values map[string]any
	// Labels are the release's labels (LabelRole, LabelGUID, ...). The
	// driver adds LabelManaged and LabelSpecHash. Helm keeps them on the
	// Secret that stores each revision, so List selects by them.
	Labels map[string]string
	// Stamp are labels written with every install or upgrade but left out
	// of the hash: the term of the master that wrote the release. A new
	// term alone never upgrades anything.
	Stamp map[string]string
}

// hashVersion changes every hash on purpose: bump it when the hashed form
// changes, knowing that every release is upgraded once.
const hashVersion = "1"

// Hash is the spec hash: the chart's digest, the values (JSON, keys
// sorted) and the labels; a deployed release with the same hash is adopted
// as it is.
func (r Release) Hash() string {
	v, _ := json.Marshal(r.Values)
	l, _ := json.Marshal(withoutDriverLabels(r.Labels))
	h := sha256.New()
	fmt.Fprintf(h, "v%s\n%s\n%s/%s\n%s\n%s\n", hashVersion, r.Chart.Digest, r.Namespace, r.Name, v, l)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func withoutDriverLabels(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	delete(out, workload.LabelManaged)
	delete(out, workload.LabelSpecHash)
	return out
}

func stateOf(r *release.Release) state.Release {
	st := state.Release{Name: r.Name, Namespace: r.Namespace, Revision: r.Version, Labels: maps.Clone(r.Labels)}
	// A query returns the storage's own labels too (name, owner, status,
	// version): the release's labels are the others.
	for _, k := range driver.GetSystemLabels() {
		delete(st.Labels, k)
	}
	if r.Chart != nil && r.Chart.Metadata != nil {
		st.Chart, st.Version, st.AppVersion = r.Chart.Metadata.Name, r.Chart.Metadata.Version, r.Chart.Metadata.AppVersion
	}
	if r.Info != nil {
		st.Status, st.Description, st.Updated = r.Info.Status.String(), r.Info.Description, r.Info.LastDeployed
	}
	return st
}

// Guard is called right before every write of a release (install,
// upgrade, uninstall) with its state at that moment (Status "missing" when
// none); an error stops the write and is returned as it is. The master
// checks its term here.
type Guard func(ctx context.Context, current state.Release) error

// ErrPending is returned for a release another action is still working
// on (Helm's pending-* states) and that is younger than the action
// timeout; an older one was left by an agent that stopped and is taken
// over.
var ErrPending = errors.New("another Helm action on this release is in progress")

// Ensure makes the release match r, following the steps of a workload
// driver's Ensure:
//  1. missing: install it;
//  2. deployed with r's hash: change nothing (adoption: same revision);
//  3. anything else (another hash, failed, superseded): upgrade it; a
//     release left pending by an agent that stopped (older than the
//     action timeout) is marked failed first, one that is uninstalling is
//     uninstalled again and installed anew.
//
// A release of that name without the managed label is refused with
// ErrNotManaged. guard runs before each write. The returned state is the
// release after the action, also when it failed (Status "failed" and
// Helm's message in Description).
func (c *Client) Ensure(ctx context.Context, r Release, guard Guard) (state.Release, error) {
	if r.Chart.Chart == nil {
		return state.Release{}, errors.New("helm: release without a chart")
	}
	cfg, err := c.action(r.Namespace)
	if err != nil {
		return state.Release{}, err
	}
	hash := r.Hash()
	labels := workload.DriverLabels(r.Labels, hash)
	maps.Copy(labels, r.Stamp)
	cur, err := last(cfg, r.Name)
	if err != nil {
		return state.Release{}, err
	}
	if cur == nil {
		if err := guard(ctx, state.Release{Name: r.Name, Namespace: r.Namespace, Status: state.Missing}); err != nil {
			return state.Release{}, err
		}
		return c.install(ctx, cfg, r, labels)
	}
	st := stateOf(cur)
	if !managed(cur.Labels) {
		return st, fmt.Errorf("release %s/%s: %w", r.Namespace, r.Name, ErrNotManaged)
	}
	status := cur.Info.Status
	if status == rcommon.StatusDeployed && cur.Labels[workload.LabelSpecHash] == hash {
		return st, nil
	}
	if status.IsPending() {
		age := time.Since(cur.Info.LastDeployed)
		if age < c.cfg.Timeout {
			return st, fmt.Errorf("release %s/%s is %s since %s: %w", r.Namespace, r.Name, status, cur.Info.LastDeployed.Format(time.RFC3339), ErrPending)
		}
		if err := guard(ctx, st); err != nil {
			return st, err
		}
		cur.Info.Status = rcommon.StatusFailed
		cur.Info.Description = fmt.Sprintf("%s abandoned for %s: the agent that started it stopped", status, age.Round(time.Second))
		if err := cfg.Releases.Update(cur); err != nil {
			return st, fmt.Errorf("release %s/%s: take over the %s revision: %w", r.Namespace, r.Name, status, err)
		}
		c.log.Warn("took over a release left pending", "release", r.Name, "namespace", r.Namespace, "status", status, "age", age.Round(time.Second))
	}
	if err := guard(ctx, st); err != nil {
		return st, err
	}
	if status == rcommon.StatusUninstalling {
		if err := c.uninstall(cfg, r.Name); err != nil {
			return st, err
		}
		return c.install(ctx, cfg, r, labels)
	}
	return c.upgrade(ctx, cfg, r, labels)
}

func (c *Client) install(ctx context.Context, cfg *action.Configuration, r Release, labels map[string]string) (state.Release, error) {
	in := action.NewInstall(cfg)
	in.Namespace, in.ReleaseName = r.Namespace, r.Name
	in.Labels = labels
	in.Timeout = c.cfg.Timeout
	// Readiness is the cluster's business and shows in the objects; the
	// agent does not hold a release (and its retries) until pods run.
	in.WaitStrategy = kube.HookOnlyStrategy
	in.Description = "installed by the agent"
	actx, cancel := c.actionContext(ctx)
	defer cancel()
	_, err := in.RunWithContext(actx, r.Chart.Chart, r.Values)
	return c.after(cfg, r, "install", err)
}

func (c *Client) upgrade(ctx context.Context, cfg *action.Configuration, r Release, labels map[string]string) (state.Release, error) {
	up := action.NewUpgrade(cfg)
	up.Namespace = r.Namespace
	up.Labels = labels
	up.Timeout = c.cfg.Timeout
	up.WaitStrategy = kube.HookOnlyStrategy
	up.MaxHistory = c.cfg.MaxHistory
	up.ResetValues = true // the values given are the whole set
	up.Description = "upgraded by the agent"
	actx, cancel := c.actionContext(ctx)
	defer cancel()
	_, err := up.RunWithContext(actx, r.Name, r.Chart.Chart, r.Values)
	return c.after(cfg, r, "upgrade", err)
}

// actionContext is the context a Helm action runs under: ctx's values but
// not its end, bounded by Config.Timeout. When the context of
// RunWithContext ends, Helm (v4.3) marks the release failed from the
// caller's goroutine while its own goroutine is still writing that release
// (a data race, and a revision recorded as failed that may yet be
// deployed). So an action that has started runs to its end: without
// waiting for readiness it is a few API writes, and the guard was asked
// just before it. A term that ends meanwhile is fenced at the next action.
func (c *Client) actionContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
}

// after reads the release back after an action: a failed action leaves a
// failed revision whose description is Helm's message.
func (c *Client) after(cfg *action.Configuration, r Release, what string, actErr error) (state.Release, error) {
	cur, err := last(cfg, r.Name)
	var st state.Release
	switch {
	case err != nil:
		st = state.Release{Name: r.Name, Namespace: r.Namespace, Status: "unknown", Description: err.Error()}
	case cur == nil:
		st = state.Release{Name: r.Name, Namespace: r.Namespace, Status: state.Missing}
	default:
		st = stateOf(cur)
	}
	if actErr != nil {
		return st, fmt.Errorf("%s %s/%s: %w", what, r.Namespace, r.Name, actErr)
	}
	return st, nil
}

// Get returns the release's state; Status "missing" when there is none.
func (c *Client) Get(_ context.Context, namespace, name string) (state.Release, error) {
	cfg, err := c.action(namespace)
	if err != nil {
		return state.Release{}, err
	}
	cur, err := last(cfg, name)
	if err != nil || cur == nil {
		return state.Release{Name: name, Namespace: namespace, Status: state.Missing}, err
	}
	return stateOf(cur), nil
}

// Uninstall removes the release and the objects it made. A missing
// release is no error; one without the managed label is refused.
func (c *Client) Uninstall(ctx context.Context, namespace, name string, guard Guard) error {
	cfg, err := c.action(namespace)
	if err != nil {
		return err
	}
	cur, err := last(cfg, name)
	if err != nil || cur == nil {
		return err
	}
	st := stateOf(cur)
	if !managed(cur.Labels) {
		return fmt.Errorf("release %s/%s: %w", namespace, name, ErrNotManaged)
	}
	if err := guard(ctx, st); err != nil {
		return err
	}
	return c.uninstall(cfg, name)
}

func (c *Client) uninstall(cfg *action.Configuration, name string) error {
	un := action.NewUninstall(cfg)
	un.Timeout = c.cfg.Timeout
	un.WaitStrategy = kube.HookOnlyStrategy
	un.IgnoreNotFound = true
	un.DeletionPropagation = "background"
	un.Description = "uninstalled by the agent"
	if _, err := un.Run(name); err != nil {
		return fmt.Errorf("uninstall %s: %w", name, err)
	}
	return nil
}

// List returns the latest revision of every managed release, in every
// namespace, whose labels carry selector, sorted by namespace and name.
func (c *Client) List(_ context.Context, selector map[string]string) ([]state.Release, error) {
	cfg, err := c.action("")
	if err != nil {
		return nil, err
	}
	sel := maps.Clone(selector)
	if sel == nil {
		sel = map[string]string{}
	}
	sel[workload.LabelManaged] = workload.ManagedValue
	sel["owner"] = "helm"
	rels, err := cfg.Releases.Query(sel)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return []state.Release{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	latest := map[string]*release.Release{}
	for _, ri := range rels {
		r, ok := ri.(*release.Release)
		if !ok {
			continue
		}
		k := r.Namespace + "/" + r.Name
		if l, ok := latest[k]; !ok || r.Version > l.Version {
			latest[k] = r
		}
	}
	out := make([]state.Release, 0, len(latest))
	for _, r := range latest {
		if r.Info != nil && r.Info.Status == rcommon.StatusUninstalled {
			continue
		}
		out = append(out, stateOf(r))
	}
	slices.SortFunc(out, func(a, b state.Release) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out, nil
}

// last is the newest revision of a release, nil when there is none.
func last(cfg *action.Configuration, name string) (*release.Release, error) {
	ri, err := cfg.Releases.Last(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read release %s: %w", name, err)
	}
	r, ok := ri.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("read release %s: unexpected type %T", name, ri)
	}
	return r, nil
}
