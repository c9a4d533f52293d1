// Package state holds what Kubernetes mode knows without Helm or a
// Kubernetes client: whether the agent runs in a pod and in which
// namespace, and the records it reports (a Helm release's state, a guid
// namespace the agent made, the master's report of both). The host build
// of the agent (without the kubernetes build tag) links this package and
// not the driver: it recognises a pod to say it cannot serve one, and
// `agent status` prints a Kubernetes master's releases from any build.
package state

import "time"

// Release is a release as the Kubernetes API stores it, as `agent status`
// shows it.
type Release struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Chart and Version are the chart's name and version; AppVersion is
	// what the chart says it deploys.
	Chart      string `json:"chart,omitempty"`
	Version    string `json:"version,omitempty"`
	AppVersion string `json:"app_version,omitempty"`
	// Revision counts the release's installs and upgrades.
	Revision int `json:"revision"`
	// Status is Helm's: deployed, failed, pending-install, ... or
	// Missing when no release exists.
	Status string `json:"status"`
	// Description is Helm's message about the last action (the error of
	// a failed one).
	Description string            `json:"description,omitempty"`
	Updated     time.Time         `json:"updated,omitzero"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Missing is the Release.Status of a release that does not exist.
const Missing = "missing"

// Namespace is a namespace the agent made, as status shows it.
type Namespace struct {
	Name string `json:"name"`
	// Phase is Kubernetes': Active, or Terminating once deleted (until the
	// namespace controller has removed what it holds).
	Phase   string            `json:"phase"`
	Created time.Time         `json:"created,omitzero"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// Report is what the master reports of Kubernetes mode: each release and
// each guid namespace.
type Report struct {
	Releases   []ReleaseReport `json:"releases"`
	Namespaces []Namespace     `json:"namespaces"`
}

// ReleaseReport is one release: Helm's state, and the releases duty's
// last error and next attempt while it fails.
type ReleaseReport struct {
	Release
	GUID      string    `json:"guid,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	NextTry   time.Time `json:"next_try,omitzero"`
}
