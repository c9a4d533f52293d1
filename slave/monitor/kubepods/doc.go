// Package kubepods is the node monitor's Kubernetes part: it measures the
// pods of this node from the kubepods cgroup tree (cgroup v1 and v2, the
// kubelet's systemd and cgroupfs drivers) and names them through the API.
//
// A Watch keeps the pods of one node (a watch with the field selector
// spec.nodeName, never a list per scrape) and the namespaces' guid labels;
// a Reader walks the cgroups once per interval into a snapshot that a
// scrape only renders, as the rest of the monitor does. A pod or container
// the watch does not know yet is counted and skipped, never guessed.
//
// It only reads: no pod, cgroup or process is ever changed.
package kubepods
