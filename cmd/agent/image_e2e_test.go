package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/agentproj/agent/drivers/docker/dockertest"
)

// The agent's image as `make image` makes it: deploy/Dockerfile built by a
// real Docker engine from the static Kubernetes build. It runs on its
// empty base, and it is the Kubernetes build: joining with the helm
// driver outside a cluster it stops with the helm driver's own message
// (the host build would say it has no Kubernetes mode).
func TestImageRunsTheKubernetesBuild(t *testing.T) {
	engine := dockertest.Start(t)
	ctx := context.Background()
	const image = "agentproj/agent:e2e"

	// The context of `make image`: bin/agent-kubernetes and the CA bundle
	// (the build host's; an empty stand-in where it has none).
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join("..", "..", "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(kubeAgentBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	var buildCtx bytes.Buffer
	tw := tar.NewWriter(&buildCtx)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, dockerfile}, {"ca-certificates.crt", 0o644, ca}, {"agent-kubernetes", 0o755, bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := engine.Client.ImageBuild(ctx, &buildCtx, build.ImageBuildOptions{
		Tags: []string{image}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	dec := json.NewDecoder(resp.Body)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if m.Error != nil {
			t.Fatalf("docker build: %s\n%s", m.Error.Message, out.String())
		}
		out.WriteString(m.Stream)
	}
	resp.Body.Close()

	// run starts a container of the image with args and returns its exit
	// code and output once it has exited.
	run := func(name string, args ...string) (int64, string) {
		t.Helper()
		c, err := engine.Client.ContainerCreate(ctx, &container.Config{Image: image, Cmd: args, Env: []string{"KUBECONFIG="}},
			&container.HostConfig{NetworkMode: "none"}, &network.NetworkingConfig{}, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = engine.Client.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
		})
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		waitC, errC := engine.Client.ContainerWait(wctx, c.ID, container.WaitConditionNextExit)
		if err := engine.Client.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case w := <-waitC:
			return w.StatusCode, dockertest.Logs(t, engine.Client, c.ID)
		case err := <-errC:
			t.Fatalf("%s did not exit: %v\n%s", name, err, dockertest.Logs(t, engine.Client, c.ID))
		}
		return 0, ""
	}

	if code, log := run("agent-version", "version"); code != 0 || !strings.HasPrefix(log, "agent ") {
		t.Fatalf("agent version in the image: exit %d, output:\n%s", code, log)
	}
	code, log := run("agent-join", "join", "--driver", "helm", "--data-dir", "/tmp/agent")
	if code != 2 || !strings.Contains(log, "no Kubernetes API to install into: the agent is not in a pod") {
		t.Fatalf("agent join --driver helm in the image: exit %d, output:\n%s", code, log)
	}
}
