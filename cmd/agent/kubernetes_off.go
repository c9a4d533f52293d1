//go:build !kubernetes

package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/master"
	"github.com/agentproj/agent/stackconfig"
)

// errNoKubernetes is why the host build stops in Kubernetes mode.
var errNoKubernetes = errors.New("no Kubernetes mode (stack.driver = helm, or no driver named in a pod): " +
	"this agent is the host build, without Kubernetes support; run the agent's container image, " +
	"or build the agent with the kubernetes tag (make build-kubernetes)")

// kubernetes is never made in the host build: openKubernetes fails.
type kubernetes struct{}

// openKubernetes stops the host build in Kubernetes mode, as a
// configuration error (exit 2): nothing to retry.
func openKubernetes(context.Context, *stackconfig.Config, *slog.Logger) (*kubernetes, error) {
	return nil, exitCode{2, errNoKubernetes}
}

// renderKubernetes cannot render the releases' values in the host build.
func renderKubernetes(*stackconfig.Config, string) ([]string, error) {
	return nil, exitCode{2, errNoKubernetes}
}

func (*kubernetes) duties(*clientv3.Client, *stackconfig.Config, etcd.Keys, *slog.Logger, prometheus.Registerer) master.Duties {
	return nil
}

func (*kubernetes) status() any { return nil }

func (*kubernetes) reload(*stackconfig.Config) {}

func (*kubernetes) pods(*stackconfig.Config, *slog.Logger, prometheus.Registerer) podMonitor {
	return nil
}
