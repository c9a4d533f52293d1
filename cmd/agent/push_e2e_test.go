package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// startPrometheusAt runs the Debian Prometheus as a remote-write receiver
// (the manager) on addr, so that it can come up after the agent.
func startPrometheusAt(t *testing.T, name, addr string) string {
	t.Helper()
	bin := requireBinary(t, "prometheus", "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {scrape_interval: 1m}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, name, bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver")
	u := "http://" + addr
	etcdtest.Eventually(t, 15*time.Second, func() bool { return httpCode(u+"/-/ready") == 200 }, "%s not ready", name)
	return u
}

// pushTo posts body to an agent's push API with the bearer token.
func pushTo(t *testing.T, api, ns, contentType, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+api+"/api/v1/push?ns="+url.QueryEscape(ns), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Push in both formats and plugins, end to end: an agent whose relay's
// upstream (a real manager Prometheus) is down acknowledges pushes and
// plugin runs, is killed with -9, starts again on its data dir, and the
// manager, once up, has every acknowledged sample with ns, node and
// cluster. Bad lines are refused with their line number; the token rule
// is the apps API's; the plugins answer on the CLI.
func TestPushAndPluginsSurviveKillNine(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireBinary(t, "prometheus", "prometheus")
	endpoint := startEtcd(t)
	managerAddr := etcdtest.FreeAddr(t) // nothing listens there yet
	dir := t.TempDir()
	token := "push-token"
	tokenFile := filepath.Join(dir, "token")
	tick := filepath.Join(dir, "tick.sh")
	od := filepath.Join(dir, "od.sh")
	hang := filepath.Join(dir, "hang.sh")
	hangPID := filepath.Join(dir, "hang.pid")
	for path, body := range map[string]string{
		tokenFile: token + "\n",
		tick:      "#!/bin/sh\necho \"# TYPE ticks gauge\"\necho \"ticks{src=\\\"cron\\\"} 7\"\n",
		od:        "#!/bin/sh\nprintf '[{\"name\":\"param\",\"tags\":{\"p\":\"%s\"},\"value\":1}]' \"$PLUGIN_PARAM\"\n",
		hang:      "#!/bin/sh\nread pid rest < /proc/self/stat; echo $pid > " + hangPID + "\nexec sleep 3600\n", // $$ is 1 in the run's PID namespace
	} {
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
[api]
token_file = %q
[relay]
upstream = ["http://%s/api/v1/write"]
flush_deadline = "100ms"
min_backoff = "100ms"
max_backoff = "500ms"
[[plugins]]
name = "tick"
command = [%q]
interval = "1s"
ns = "infra"
[[plugins]]
name = "od"
command = [%q]
[[plugins]]
name = "hang"
command = [%q]
timeout = "1h"
`, tokenFile, managerAddr, tick, od, hang)), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	a := startAgentIn(t, endpoint, "p1", "2s", dataDir, "--config", cfg)
	etcdtest.Eventually(t, 30*time.Second, a.ready, "agent not ready")
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		code, _ := pushTo(t, a.api, "warmup", "", token, "e2e_warmup 1\n")
		return code == http.StatusNoContent // 503 until the relay runs
	}, "relay not running")

	// The on-demand plugin through the CLI, its param through PLUGIN_PARAM.
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(agentBinary(t), append(args, "--api", "http://"+a.api, "--token-file", tokenFile)...).CombinedOutput()
		if err != nil {
			t.Fatalf("agent %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := cli("plugins", "run", "od", "--param", "hello world")
	if !strings.Contains(out, `plugin_od_param{cluster="e2e",node="p1",ns="plugins",p="hello world"} 1`) || !strings.Contains(out, "stored in the relay's queue") {
		t.Fatalf("agent plugins run:\n%s", out)
	}
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		var list struct {
			Plugins []struct {
				Name string `json:"name"`
				Runs int    `json:"runs"`
			} `json:"plugins"`
		}
		return json.Unmarshal([]byte(cli("plugins", "list", "-o", "json")), &list) == nil && len(list.Plugins) == 3 && list.Plugins[0].Name == "tick" && list.Plugins[0].Runs >= 1
	}, "no scheduled run of tick in agent plugins list")
	if out := cli("plugins", "list"); !strings.Contains(out, "tick") || !strings.Contains(out, "on demand") {
		t.Fatalf("agent plugins list:\n%s", out)
	}

	if code, body := pushTo(t, a.api, "team-a", "", "", "x 1\n"); code != http.StatusUnauthorized {
		t.Fatalf("push without the token: %d %s", code, body)
	}
	text := "# TYPE e2e_jobs_done counter\ne2e_jobs_done{queue=\"mail\"} 42\ne2e_temperature 21.5\n"
	code, body := pushTo(t, a.api, "team-a", "", token, "e2e_kept_not 1\ne2e_bad{x=\"1\" 2\n")
	if code != http.StatusBadRequest || !strings.Contains(body, "line 2: ") {
		t.Fatalf("bad line: %d %s, want 400 naming line 2", code, body)
	}
	if code, body := pushTo(t, a.api, "team-a", "text/plain; version=0.0.4", token, text); code != http.StatusNoContent {
		t.Fatalf("text push: %d %s", code, body)
	}
	jsonBody := fmt.Sprintf(`[{"name": "e2e_disk_free", "timestamp": %d, "tags": {"mount": "/var"}, "value": 1.5},
{"name": "e2e_load", "value": 0.25}]`, time.Now().Unix())
	if code, body := pushTo(t, a.api, "team-b", "application/json", token, jsonBody); code != http.StatusNoContent {
		t.Fatalf("JSON push: %d %s", code, body)
	}
	// A plugin that hangs while the agent is killed does not outlive it.
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.api+"/api/v1/plugins/hang/run", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	var pid int
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		b, _ := os.ReadFile(hangPID)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	}, "hanging plugin not started")

	// Everything above was acknowledged while the manager was down, the
	// last push just now: only the relay's queue holds it.
	a.kill()
	etcdtest.Eventually(t, 10*time.Second, func() bool { return exited(pid) }, "plugin %d outlived the agent killed with -9", pid)
	manager := startPrometheusAt(t, "manager", managerAddr)
	a = startAgentIn(t, endpoint, "p1", "2s", dataDir, "--config", cfg)
	for _, q := range []string{
		`e2e_jobs_done{ns="team-a",node="p1",cluster="e2e",queue="mail"} == 42`,
		`e2e_temperature{ns="team-a",node="p1",cluster="e2e"} == 21.5`,
		`e2e_disk_free{ns="team-b",node="p1",cluster="e2e",mount="/var"} == 1.5`,
		`e2e_load{ns="team-b",node="p1",cluster="e2e"} == 0.25`,
		`plugin_od_param{ns="plugins",node="p1",cluster="e2e",p="hello world"} == 1`,
		`plugin_tick_ticks{ns="infra",node="p1",cluster="e2e",src="cron"} == 7`,
	} {
		etcdtest.Eventually(t, 60*time.Second, func() bool { return query(manager, q) == 1 }, "manager lacks %s", q)
	}
	if n := query(manager, `{__name__=~"e2e_kept_not|e2e_bad"}`); n != 0 {
		t.Fatalf("a sample of a refused push reached the manager (%d series)", n)
	}

	// The token is rotated in its file: the first request with the new one
	// is taken (the master's Prometheus reads the file at every request),
	// the old one refused from then on.
	if err := os.WriteFile(tokenFile, []byte("push-token-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := pushTo(t, a.api, "team-a", "", "push-token-2", "e2e_rotated 1\n"); code != http.StatusNoContent {
		t.Fatalf("the rotated token: %d %s, want 204", code, body)
	}
	if code, body := pushTo(t, a.api, "team-a", "", token, "e2e_rotated 1\n"); code != http.StatusUnauthorized {
		t.Fatalf("the old token after the rotation: %d %s, want 401", code, body)
	}
}
