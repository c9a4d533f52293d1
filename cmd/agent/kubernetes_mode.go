package main

import (
	"context"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/drivers/helm/state"
	"github.com/agentproj/agent/stackconfig"
)

// Kubernetes mode (the helm driver, the master's releases duty, the pod
// monitor) is linked only into the agent built with the kubernetes build
// tag, the build of the agent's container image: kubernetes.go. The host
// build (kubernetes_off.go) leaves Helm and client-go out, whose package
// initialisation alone keeps ~60 MiB of an agent resident. Both builds
// recognise Kubernetes mode alike.

// kubernetesMode reports whether the stack runs as Helm releases:
// stack.driver = helm, or no driver named and the agent is in a pod.
func kubernetesMode(cfg *stackconfig.Config) bool {
	return cfg.Stack.Driver == "helm" || (cfg.Stack.Driver == "" && state.InCluster())
}

// podMonitor is the pod monitor of Kubernetes mode as the agent runs it.
type podMonitor interface {
	Run(ctx context.Context) error
	Collector() prometheus.Collector
}

// appCharts are the names of stack.helm.app_charts, for the apps API.
func appCharts(cfg *stackconfig.Config) []string {
	return slices.Sorted(maps.Keys(cfg.Stack.Helm.AppCharts))
}
