// Package docker is the driver that runs workloads as containers through the
// Docker Engine API (DOCKER_HOST, API version negotiated).
//
// Every container gets host networking (there is no bridge on these hosts),
// Init (so it stops promptly on SIGTERM), the spec's restart policy as
// Docker's own (which also acts while the agent is down), labels, hostname,
// bind mounts, environment and resource limits. Ensure inspects the
// container by name and (re)creates it only when it is missing or its
// spec-hash label differs; a stopped one is started again as it is.
//
// Images are used as they are when present; an absent one is pulled once,
// and the error says so when no registry answers. Spec.Binary is ignored.
//
// It must never touch a container without the io.agentproj.managed label.
package docker
