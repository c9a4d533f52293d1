// Package dockertest is test support for code that drives the Docker engine:
// it starts a real dockerd in a short temporary directory (no bridge, no
// iptables, as ../shared/ENV.md runs it) for one test and stops it when the
// test ends, and it builds local images from installed binaries, since no
// registry is reachable: ImportImage for a real component (Prometheus,
// node_exporter), StandInImage for a component that cannot run on these
// machines (Vector, Jaeger), which only proves how its container was made.
//
// Missing dockerd or busybox fails the test when CI=true and skips it
// otherwise, with the apt-get line that installs them.
package dockertest
