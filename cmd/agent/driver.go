package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentproj/agent/drivers/docker"
	"github.com/agentproj/agent/drivers/none"
	"github.com/agentproj/agent/drivers/process"
	"github.com/agentproj/agent/drivers/workload"
	"github.com/agentproj/agent/stackconfig"
)

// openDriver returns the workload driver that stack.driver names on a host;
// empty means docker when its socket answers, else process. Kubernetes mode
// (stack.driver = helm, or empty in a pod) has no workload driver: see
// kubernetesMode and openKubernetes.
func openDriver(ctx context.Context, cfg *stackconfig.Config, log *slog.Logger) (workload.Driver, error) {
	procDir := filepath.Join(cfg.DataDir, "processes")
	switch cfg.Stack.Driver {
	case "docker":
		return localDocker(ctx, false, log)
	case "process":
		return process.New(procDir, process.WithLogger(log))
	case "none":
		return none.New(), nil
	case "":
		d, err := localDocker(ctx, true, log)
		if err == nil {
			log.Info("stack driver: docker (its socket answers)", "docker_host", dockerHost())
			return d, nil
		}
		log.Info("stack driver: process (no Docker engine answers)", "tried", err)
		return process.New(procDir, process.WithLogger(log))
	}
	return nil, fmt.Errorf("stack.driver: must be docker, process, helm or none, got %q", cfg.Stack.Driver)
}

// localDocker opens the docker driver on the local engine (DOCKER_HOST);
// auto (stack.driver empty) asks the engine for 2 s only, so that the
// agent goes on with the process driver when none answers.
func localDocker(ctx context.Context, auto bool, log *slog.Logger) (*docker.Driver, error) {
	opts := []docker.Option{docker.WithLogger(log)}
	if auto {
		opts = append(opts, docker.WithPingTimeout(2*time.Second))
	}
	return docker.New(ctx, opts...)
}

// dockerHost is the engine address the Docker client uses.
func dockerHost() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return "unix:///var/run/docker.sock"
}

// dockerSocket is the host path of the engine's unix socket, for Vector's
// docker_logs source; "" when the engine is not reached over a socket.
func dockerSocket() string {
	p, ok := strings.CutPrefix(dockerHost(), "unix://")
	if !ok {
		return ""
	}
	return p
}
