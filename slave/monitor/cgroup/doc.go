// Package cgroup reads the resource counters of containers and pods from
// the host's cgroup files, v1 (a hierarchy per controller) and v2 (one
// unified hierarchy), and tells from a cgroup path which container or pod
// it belongs to.
//
// Identify knows the paths of Docker (cgroupfs and systemd cgroup
// drivers) and of the kubelet's kubepods tree (cgroupfs and systemd, v1
// and v2), so a source of containers (the Docker engine today, the pods of
// a Kubernetes node later) only has to name what Scan finds. The package
// reads files and never writes to a cgroup.
package cgroup
