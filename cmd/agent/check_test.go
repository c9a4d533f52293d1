package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// agent check renders what join would run on this host, from the same
// flags and file, without etcd: every workload with its command, every
// config file, and a Prometheus config the real promtool accepts.
func TestCheckRendersWhatJoinWouldRun(t *testing.T) {
	promtool := etcdtest.RequireBinary(t, "promtool", "prometheus")
	dir, render := t.TempDir(), filepath.Join(t.TempDir(), "stack")
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The process driver wants the binaries to exist; check never runs
	// them.
	otelcol, jaeger := filepath.Join(dir, "otelcol"), filepath.Join(dir, "jaeger")
	for _, bin := range []string{otelcol, jaeger} {
		if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfgFile := filepath.Join(dir, "agent.toml")
	toml := `
cluster = "prod"
[api]
token_file = "` + token + `"
[relay]
upstream = ["https://manager.example/api/v1/write"]
[stack.trace_agent]
binary = "` + otelcol + `"
[stack.jaeger]
binary = "` + jaeger + `"
[manager]
logs_url = "https://manager.example/logs"
traces_otlp_endpoint = "https://manager.example:4317"
`
	if err := os.WriteFile(cfgFile, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "check", "--config", cfgFile, "--render", render, "--node", "n1",
		"--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:9464", "--driver", "process")
	if err != nil {
		t.Fatalf("agent check: %v\n%s", err, out)
	}
	for _, want := range []string{
		"config " + cfgFile + ": valid",
		"node n1, cluster prod, API http://127.0.0.1:9464 (bearer token required)",
		"relay: http://127.0.0.1:9464/api/v1/write, to 1 upstream(s)",
		"stack: driver process, configs rendered into " + render,
		"agent-node-exporter-n1: /usr/bin/prometheus-node-exporter --web.listen-address=127.0.0.1:9100",
		"agent-trace-agent-n1: " + otelcol + " --config=" + filepath.Join(render, "trace-agent", "config.yml"),
		"agent-prometheus-n1: /usr/bin/prometheus --config.file=" + filepath.Join(render, "prometheus", "prometheus.yml"),
		"agent-jaeger-n1: " + jaeger + " --config=" + filepath.Join(render, "jaeger", "config.yml"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output has no %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "would not start") {
		t.Errorf("every component has what it needs, yet:\n%s", out)
	}
	for _, f := range []string{"prometheus/prometheus.yml", "prometheus/monitor.rules.yml", "jaeger/config.yml", "trace-agent/config.yml"} {
		if !strings.Contains(out, filepath.Join(render, f)) {
			t.Errorf("%s is not listed:\n%s", f, out)
		}
		if _, err := os.Stat(filepath.Join(render, f)); err != nil {
			t.Errorf("rendered file: %v", err)
		}
	}
	yml, err := os.ReadFile(filepath.Join(render, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(yml), "url: http://127.0.0.1:9464/api/v1/write") || !strings.Contains(string(yml), "credentials_file: "+token) {
		t.Errorf("the rendered Prometheus does not write to the relay with the token:\n%s", yml)
	}
	if b, err := exec.Command(promtool, "check", "config", filepath.Join(render, "prometheus", "prometheus.yml")).CombinedOutput(); err != nil {
		t.Errorf("promtool check config: %v\n%s", err, b)
	}

	// Into the same folder again: its files would be listed as new.
	_, err = runCLI(t, "check", "--config", cfgFile, "--render", render, "--node", "n1", "--data-dir", filepath.Join(dir, "data"), "--driver", "process")
	var ec exitCode
	if !errors.As(err, &ec) || ec.code != 2 || !strings.Contains(err.Error(), "--render: "+render+" is not empty") {
		t.Errorf("a second render into %s: %v, want exit code 2 naming --render", render, err)
	}
}

// What join would refuse, check refuses the same way (exit code 2, the key
// and the value named); what join would only warn about is listed.
func TestCheckReportsProblems(t *testing.T) {
	dir := t.TempDir()
	_, err := runCLI(t, "check", "--node", "n1", "--data-dir", dir, "--listen", "0.0.0.0:9464", "--driver", "process")
	var ec exitCode
	if !errors.As(err, &ec) || ec.code != 2 || !strings.Contains(err.Error(), `api.token_file: required when listen is not loopback, got listen "0.0.0.0:9464"`) {
		t.Fatalf("listen beyond loopback without a token: %v, want exit code 2 naming api.token_file", err)
	}

	out, err := runCLI(t, "check", "--node", "n1", "--data-dir", dir, "--driver", "process")
	if err != nil {
		t.Fatalf("agent check: %v\n%s", err, out)
	}
	for _, want := range []string{
		"would not start (the running agent logs these as warnings):",
		`component=trace_agent err="no Jaeger collector published in etcd yet`,
		`msg="jaeger collector not started" err="manager.traces_otlp_endpoint: not set, so traces have nowhere to go"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output has no %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "agent-jaeger-n1") || strings.Contains(out, "agent-trace-agent-n1") {
		t.Errorf("components that would not start are listed as workloads:\n%s", out)
	}
}

// With stack.driver empty, check picks the driver as join does: docker
// when the engine answers (a real dockerd here), and then the trace agent
// ships the containers' logs from where that engine keeps them.
func TestCheckFindsTheDockerEngine(t *testing.T) {
	e := dockertest.Start(t)
	t.Setenv("DOCKER_HOST", e.Host)
	render := t.TempDir()
	out, err := runCLI(t, "check", "--node", "n1", "--data-dir", t.TempDir(), "--render", render,
		"--manager-logs-url", "https://manager.example/logs")
	if err != nil {
		t.Fatalf("agent check: %v\n%s", err, out)
	}
	if !strings.Contains(out, "stack: driver docker (stack.driver empty: the Docker engine answers)") {
		t.Fatalf("the driver is not docker with an engine answering:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(render, "trace-agent", "config.yml"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(b), e.Dir) || !strings.Contains(string(b), "-json.log") {
		t.Fatalf("the trace agent does not read the engine's container logs (under %s):\n%s", e.Dir, b)
	}
}
