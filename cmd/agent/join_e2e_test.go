package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/process/processtest"
)

func httpCode(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// etcd down when the agent starts: it stays up, healthy but not ready,
// says it retries, and joins once etcd appears.
func TestJoinWaitsForEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireBinary(t, "etcd", "etcd-server")
	client, peer := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	a := startAgent(t, "http://"+client, "n1", "2s")
	etcdtest.Eventually(t, 10*time.Second, func() bool { return httpCode("http://"+a.api+"/-/healthy") == 200 }, "not healthy without etcd")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(readFile(t, a.log), `msg="cannot start etcd session, retrying" node=n1 component=node err="etcd at http://`+client+` is unreachable: connection refused (nothing listens there)"`)
	}, "no retry message naming the endpoint and the cause in the log")
	if code := httpCode("http://" + a.api + "/-/ready"); code != 503 {
		t.Fatalf("/-/ready = %d without etcd, want 503", code)
	}
	startProc(t, "etcd", requireBinary(t, "etcd", "etcd-server"), "--name", "e1", "--data-dir", t.TempDir(),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "e1=http://"+peer, "--initial-cluster-state", "new")
	etcdtest.Eventually(t, 30*time.Second, a.ready, "agent did not join once etcd was up")
}

// SIGHUP applies log_level, exporters and plugins and names the keys that
// need a restart; a bad file is rejected and the agent keeps running.
func TestReloadOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	endpoint := startEtcd(t)
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("log_level = \"info\"\n")
	a := startAgent(t, endpoint, "n1", "2s", "--config", cfg)
	etcdtest.Eventually(t, 10*time.Second, a.ready, "not ready")
	app := `{"guid": "reloaded-app", "image": "quay.example/app:1"}`
	if code, body := postApp(t, "http://"+a.api, app); code != http.StatusBadRequest || !strings.Contains(body, "api.allowed_images") {
		t.Fatalf("POST of an app before api.allowed_images allows it: %d %s, want 400", code, body)
	}

	write("log_level = \"warn\"\nlog_format = \"json\"\n[api]\nallowed_images = [\"quay.example/*\"]\n[[exporters]]\njob = \"node\"\naddress = \"127.0.0.1:9100\"\n" +
		"[[plugins]]\nname = \"hello\"\ncommand = [\"/bin/echo\", \"hello 1\"]\n" +
		fmt.Sprintf("[[monitor.processes]]\nname = \"self\"\npid = %d\n", a.cmd.Process.Pid))
	a.signal(syscall.SIGHUP)
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		log := readFile(t, a.log)
		return strings.Contains(log, `msg=reloaded node=n1 log_level=warn`) && strings.Contains(log, `keys=log_format`)
	}, "reload did not apply log_level and report log_format as needing a restart")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		out, _ := exec.Command(agentBinary(t), "targets", "--api", "http://"+a.api, "-o", "json").Output()
		return strings.Contains(string(out), `"127.0.0.1:9100"`)
	}, "reloaded exporter not published")
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(processtest.HTTPGet("http://"+a.api+"/api/v1/plugins"), `"name": "hello"`)
	}, "the plugin added by the reload is not served: %s", poll.Latest(func() any { return processtest.HTTPGet("http://" + a.api + "/api/v1/plugins") }))
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(processtest.HTTPGet("http://"+a.api+"/metrics/monitor"), `namedprocess_namegroup_up{group="self",guid="",ip="",service=""} 1`)
	}, "the process group added by the reload is not measured")
	if code, body := postApp(t, "http://"+a.api, app); code != http.StatusCreated {
		t.Fatalf("POST of an app whose image the reloaded api.allowed_images allows: %d %s, want 201", code, body)
	}

	write("log_level = \"loud\"\n")
	a.signal(syscall.SIGHUP)
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(readFile(t, a.log), `log_level: must be one of debug, info, warn, error, got \"loud\"`)
	}, "bad reload not reported")
	if !a.ready() {
		t.Fatal("agent not ready after a rejected reload")
	}
}

// agent status --etcd with no etcd there names the endpoints and the cause.
func TestStatusNamesUnreachableEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	a, b := "http://"+etcdtest.FreeAddr(t), "http://"+etcdtest.FreeAddr(t)
	for _, cmd := range []string{"status", "targets"} {
		out, err := exec.Command(agentBinary(t), cmd, "--etcd", a+","+b, "--etcd-dial-timeout", "1s").CombinedOutput()
		want := "agent: etcd is unreachable: " + a + ": connection refused (nothing listens there); " + b + ": connection refused (nothing listens there)\n"
		if err == nil || string(out) != want {
			t.Errorf("agent %s --etcd %s,%s: %v\n got %q\nwant %q", cmd, a, b, err, out, want)
		}
	}
}
