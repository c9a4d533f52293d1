package etcd

import (
	"path"
	"strings"
)

// Keys builds every etcd key of one cluster: <prefix>/<cluster>/... . See
// docs/architecture.md for what lives where.
type Keys struct {
	root string // "<prefix>/<cluster>/"
}

// NewKeys returns the key layout for cluster under prefix ("/agent").
func NewKeys(prefix, cluster string) Keys {
	return Keys{root: path.Join(prefix, cluster) + "/"}
}

// Root is the prefix of every key of the cluster, ending in '/'.
func (k Keys) Root() string { return k.root }

// Members is the prefix of the member records.
func (k Keys) Members() string { return k.root + "members/" }

// Member is the member record of node.
func (k Keys) Member(node string) string { return k.Members() + node }

// Election is the prefix that concurrency.Election campaigns under; the
// election keys themselves are Election() + "/<lease>".
func (k Keys) Election() string { return k.root + "election" }

// Targets is the prefix of every published target group.
func (k Keys) Targets() string { return k.root + "targets/" }

// NodeTargets is the prefix of the target groups of one node.
func (k Keys) NodeTargets(node string) string { return k.Targets() + node + "/" }

// Target is one target group: targets/<node>/<job>/<id>.
func (k Keys) Target(node, job, id string) string {
	return k.NodeTargets(node) + job + "/" + id
}

// ParseTarget splits a target key into node, job and id; ok is false for a
// key that does not have that shape. The parts are substrings of key: it
// allocates nothing, so it may run in sort comparisons.
func (k Keys) ParseTarget(key string) (node, job, id string, ok bool) {
	rest, found := strings.CutPrefix(key, k.root)
	if found {
		rest, found = strings.CutPrefix(rest, "targets/")
	}
	if !found {
		return "", "", "", false
	}
	node, rest, ok1 := strings.Cut(rest, "/")
	job, id, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || node == "" || job == "" || id == "" || strings.Contains(id, "/") {
		return "", "", "", false
	}
	return node, job, id, true
}

// CompareTargets orders target keys by job, node and id: the order of the
// groups in the master's file_sd files and in every agent's http_sd and
// /api/v1/targets answers, so that file_sd and http_sd give the same bytes
// for the same targets. A key that is not a target key sorts first, by its
// text.
func (k Keys) CompareTargets(a, b string) int {
	an, aj, ai, aok := k.ParseTarget(a)
	bn, bj, bi, bok := k.ParseTarget(b)
	switch {
	case !aok && !bok:
		return strings.Compare(a, b)
	case !aok:
		return -1
	case !bok:
		return 1
	}
	if c := strings.Compare(aj, bj); c != 0 {
		return c
	}
	if c := strings.Compare(an, bn); c != 0 {
		return c
	}
	return strings.Compare(ai, bi)
}

// Collectors is the prefix of the URLs the master publishes.
func (k Keys) Collectors() string { return k.root + "collectors/" }

// Collector is the URL record of one cluster service.
func (k Keys) Collector(name string) string { return k.Collectors() + name }

// Apps is the prefix of the desired application specs.
func (k Keys) Apps() string { return k.root + "apps/" }

// App is the desired spec of one application.
func (k Keys) App(guid string) string { return k.Apps() + guid }

// AppStatuses is the prefix of the observed application states.
func (k Keys) AppStatuses() string { return k.root + "status/apps/" }

// NodeStatuses is the prefix of the nodes' observed stack and relay state.
func (k Keys) NodeStatuses() string { return k.root + "status/nodes/" }

// NodeStatus is the observed state of one node's workloads and relay.
func (k Keys) NodeStatus(node string) string { return k.NodeStatuses() + node }

// AppStatus is the observed state of one application.
func (k Keys) AppStatus(guid string) string { return k.AppStatuses() + guid }
