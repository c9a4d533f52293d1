package slave

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestAPI(t *testing.T) {
	srv := etcdtest.Start(t)
	px := srv.Proxy()
	cli := srv.ClientVia(px.Endpoint())
	n := startNodeWith(t, cli, "n1", nil)
	api, err := NewAPI("127.0.0.1:0", n.Node, etcd.Registry{KV: cli, Keys: testKeys, Cluster: "test"}, n.reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("api.Run: %v", err)
		}
	})
	base := "http://" + api.Addr()

	if code, _ := get(t, base+"/-/healthy"); code != 200 {
		t.Fatalf("/-/healthy = %d", code)
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool { code, _ := get(t, base+"/-/ready"); return code == 200 }, "never ready")
	etcdtest.Eventually(t, 5*time.Second, n.Master, "never master")

	code, body := get(t, base+"/api/v1/status")
	var view etcd.ClusterView
	if err := json.Unmarshal([]byte(body), &view); code != 200 || err != nil {
		t.Fatalf("/api/v1/status = %d %s (%v)", code, body, err)
	}
	if view.Cluster != "test" || view.Master == nil || view.Master.Node != "n1" || len(view.Members) != 1 || !view.Members[0].Master {
		t.Fatalf("status: %s", body)
	}
	code, body = get(t, base+"/metrics")
	for _, want := range []string{"agent_is_master 1", "agent_session_up 1", "agent_elections_won_total 1", `agent_build_info{goversion=`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}

	// etcd unreachable: not ready, and the status says why, as JSON.
	px.Cut()
	etcdtest.Eventually(t, 5*time.Second, func() bool { code, _ := get(t, base+"/-/ready"); return code == 503 }, "still ready with etcd cut off")
	_, body = get(t, base+"/-/ready")
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("/-/ready 503 body is not a JSON error: %q", body)
	}
	if code, _ := get(t, base+"/-/healthy"); code != 200 {
		t.Fatalf("/-/healthy = %d during an etcd outage; the process is alive", code)
	}
	px.Restore()
	etcdtest.Eventually(t, 10*time.Second, func() bool { code, _ := get(t, base+"/-/ready"); return code == 200 }, "not ready again after etcd came back")
}

func TestHTTPSDAndTargetsAPI(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	reg := etcd.Registry{KV: cli, Keys: testKeys, Cluster: "test"}
	n := startNodeWith(t, cli, "n1", nil)
	api, err := NewAPI("127.0.0.1:0", n.Node, reg, n.reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	api.HandleTargets(reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + api.Addr()

	// Empty: always a list, never null.
	if code, body := get(t, base+"/sd/http"); code != 200 || body != "[]\n" {
		t.Fatalf("empty /sd/http = %d %q", code, body)
	}
	for key, value := range map[string]string{
		testKeys.Target("n1", "node", "0"): `{"targets":["127.0.0.1:9100"],"labels":{"node":"n1"}}`,
		testKeys.Target("n2", "node", "0"): `{"targets":["127.0.0.2:9100"],"labels":{"node":"n2"}}`,
		testKeys.Target("n1", "app", "0"):  `{"targets":["127.0.0.1:8080"],"labels":{"node":"n1"}}`,
		testKeys.Target("n3", "node", "0"): `not json`,
		testKeys.Target("n3", "node", "1"): `{"targets":["no-port"]}`,
		testKeys.Targets() + "too/short":   `{"targets":["127.0.0.9:1"]}`,
	} {
		if _, err := cli.Put(context.Background(), key, value); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get(base + "/sd/http?job=node")
	if err != nil {
		t.Fatal(err)
	}
	var groups []etcd.TargetGroup
	if err := json.NewDecoder(resp.Body).Decode(&groups); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/sd/http?job=node: %v, content type %q", err, resp.Header.Get("Content-Type"))
	}
	resp.Body.Close()
	if len(groups) != 2 || groups[0].Targets[0] != "127.0.0.1:9100" || groups[1].Labels["job"] != "node" {
		t.Fatalf("/sd/http?job=node = %+v", groups)
	}
	code, body := get(t, base+"/api/v1/targets")
	var set etcd.TargetSet
	if err := json.Unmarshal([]byte(body), &set); code != 200 || err != nil {
		t.Fatalf("/api/v1/targets = %d %s", code, body)
	}
	if len(set.Targets) != 3 || set.Targets[0].Job != "app" || len(set.Skipped) != 3 {
		t.Fatalf("/api/v1/targets: %d targets (first job %q), %d skipped: %s", len(set.Targets), set.Targets[0].Job, len(set.Skipped), body)
	}
}
