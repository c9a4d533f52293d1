// Package helm is the Kubernetes driver: it installs, upgrades, adopts and
// uninstalls Helm releases through the Helm Go SDK (helm.sh/helm/v4), never
// a helm binary, and keeps the namespaces and pod labels the agent owns.
//
// It owns what a release is to the agent: a chart, values and labels, and
// a spec hash over the three stamped on the release (LabelSpecHash), so an
// agent that finds a deployed release with the same hash adopts it and
// changes nothing (same revision). Every write goes through a Guard the
// caller gives (the master's fence): a Guard that refuses stops the write
// before it reaches the API. Releases, namespaces and pods without the
// agent's managed label are never changed or removed.
//
// It must never render values by templating strings: the caller hands it
// values as data, and charts get them as Helm values.
package helm
