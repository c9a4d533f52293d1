package workload

import "maps"

// LabelPrefix is the reverse-DNS prefix of every label the agent sets.
const LabelPrefix = "io.agentproj."

// Label keys. Drivers set LabelManaged and LabelSpecHash; callers set the
// others (the Supervisor sets LabelOwner from its options).
const (
	// LabelManaged is "true" on every workload a driver started. Drivers
	// refuse to replace or remove a workload without it.
	LabelManaged = LabelPrefix + "managed"
	// LabelSpecHash is Spec.Hash() of the spec the workload was made from.
	LabelSpecHash = LabelPrefix + "spec-hash"
	// LabelOwner names the Supervisor that keeps the workload (for example
	// "node-stack", "cluster-stack", "apps"), so that two supervisors on one
	// host never take each other's workloads for orphans.
	LabelOwner = LabelPrefix + "owner"
	// LabelNode is the agent's node name.
	LabelNode = LabelPrefix + "node"
	// LabelCluster is the cluster name.
	LabelCluster = LabelPrefix + "cluster"
	// LabelRole is what the workload is: one of the Role constants.
	LabelRole = LabelPrefix + "role"
	// LabelGUID is the manager's guid of an application.
	LabelGUID = LabelPrefix + "guid"
)

// ManagedValue is the value of LabelManaged.
const ManagedValue = "true"

// Roles, the values of LabelRole.
const (
	RolePrometheus   = "prometheus"
	RoleNodeExporter = "node-exporter"
	RoleVector       = "vector"
	RoleTraceAgent   = "trace-agent"
	RoleJaeger       = "jaeger"
	RoleApp          = "app"
)

// DriverLabels returns a copy of labels with the driver-owned keys set:
// LabelManaged and LabelSpecHash (hash).
func DriverLabels(labels map[string]string, hash string) map[string]string {
	out := make(map[string]string, len(labels)+2)
	maps.Copy(out, labels)
	out[LabelManaged] = ManagedValue
	out[LabelSpecHash] = hash
	return out
}

// Matches reports whether labels carry every key and value of selector. An
// empty selector matches everything.
func Matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// IsManaged reports whether labels mark a workload a driver started.
func IsManaged(labels map[string]string) bool {
	return labels[LabelManaged] == ManagedValue
}
