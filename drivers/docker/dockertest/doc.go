// Package dockertest is test support for code that drives the Docker engine:
// it starts a real dockerd in a short temporary directory (no bridge, no
// iptables, as ../shared/ENV.md runs it) for one test and stops it when the
// test ends, and it builds local images from local binaries, since no
// registry is reachable: ImportImage for a real component (Prometheus and
// node_exporter from Debian; Jaeger v2 and the project's otelcol from the
// testbins, drivers/process/processtest), StandInImage for Vector, the one
// component that cannot run on these machines, which only proves how its
// container was made.
//
// Missing dockerd or busybox fails the test when CI=true and skips it
// otherwise, with the apt-get line that installs them.
package dockertest
