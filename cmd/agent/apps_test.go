package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/slave/apps"
)

// appsAPI serves the real apps API on an embedded etcd with members n1 and
// n2, behind token when it is not empty.
func appsAPI(t *testing.T, token string) string {
	t.Helper()
	cli := etcdtest.Start(t).Client()
	keys := etcd.NewKeys("/agent", "default")
	for _, n := range []string{"n1", "n2"} {
		v, _ := json.Marshal(etcd.Member{Node: n})
		if _, err := cli.Put(context.Background(), keys.Member(n), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	h := apps.NewHandler(cli, apps.HandlerConfig{Keys: keys, AllowedImages: []string{"registry.example/*/*"}}, slog.New(slog.DiscardHandler), nil)
	mux := http.NewServeMux()
	h.Register(mux, apps.NewToken(token))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// runApps runs `agent apps args...` and returns its output.
func runApps(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newAppsCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestAppsCommandLifecycle(t *testing.T) {
	api := appsAPI(t, "")
	example := filepath.Join("..", "..", "testdata", "apps", "full.json")

	out, err := runApps(t, "", "create", "-f", example, "--api", api)
	if err != nil || !strings.HasPrefix(out, "app billing-7f3a created on node n") {
		t.Fatalf("create -f: %q, %v", out, err)
	}
	b, _ := os.ReadFile(example)
	out, err = runApps(t, string(b), "create", "-f", "-", "--api", api)
	if err != nil || !strings.Contains(out, "already exists with this spec") {
		t.Fatalf("create -f - again: %q, %v", out, err)
	}
	out, err = runApps(t, "", "create", "--api", api, "--guid", "shop-web", "--image", "registry.example/shop/web:1.4.2",
		"--node", "n2", "--env", "LOG_LEVEL=debug", "--env", "EMPTY=", "--arg=--verbose", "--metrics-port", "9102", "--label", "team=shop", "-o", "json")
	if err != nil {
		t.Fatalf("create from flags: %q, %v", out, err)
	}
	var created apps.AppView
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	if created.Node != "n2" || !created.Pinned || created.Spec.Env["LOG_LEVEL"] != "debug" || created.Spec.Env["EMPTY"] != "" ||
		created.Spec.Args[0] != "--verbose" || created.Spec.Metrics.Port != 9102 || created.Spec.Metrics.Path != "/metrics" || created.Spec.Labels["team"] != "shop" {
		t.Fatalf("created %+v", created)
	}

	out, err = runApps(t, "", "list", "--api", api)
	if err != nil || !strings.Contains(out, "GUID") || !strings.Contains(out, "billing-7f3a") || !strings.Contains(out, "shop-web      n2    true") {
		t.Fatalf("list: %q, %v", out, err)
	}
	out, err = runApps(t, "", "get", "shop-web", "--api", api)
	if err != nil || !strings.Contains(out, "registry.example/shop/web:1.4.2") || !strings.Contains(out, `LOG_LEVEL="debug"`) {
		t.Fatalf("get: %q, %v", out, err)
	}
	out, err = runApps(t, "", "delete", "shop-web", "--api", api)
	if err != nil || out != "app shop-web deleted\n" {
		t.Fatalf("delete: %q, %v", out, err)
	}
	_, err = runApps(t, "", "get", "shop-web", "--api", api)
	if err == nil || !strings.Contains(err.Error(), `app "shop-web" not found (HTTP 404)`) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestAppsCommandErrors(t *testing.T) {
	api := appsAPI(t, "s3cret")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
		code int // exitCode, 0: a plain error (exit 1)
	}{
		{"no token", []string{"list", "--api", api}, "missing bearer token", 0},
		{"API message", []string{"create", "--api", api, "--token-file", tokenFile, "--guid", "Bad_Guid", "--image", "registry.example/a/b:1"}, "guid: must be a DNS label", 0},
		{"image refused", []string{"create", "--api", api, "--token-file", tokenFile, "--guid", "a", "--image", "evil.example/x:1"}, "image: must match one of api.allowed_images", 0},
		{"bad env flag", []string{"create", "--api", api, "--guid", "a", "--image", "x", "--env", "NOVALUE"}, `--env: want NAME=VALUE, got "NOVALUE"`, 2},
		{"file and flags", []string{"create", "--api", api, "-f", "x.json", "--guid", "a"}, "not both", 2},
		{"bad output", []string{"list", "--api", api, "-o", "yaml"}, "--output: must be table or json", 2},
		{"missing token file", []string{"list", "--api", api, "--token-file", "/nonexistent/token"}, "--token-file", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runApps(t, "", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			var ec exitCode
			if got := errors.As(err, &ec); got != (tc.code != 0) || (got && ec.code != tc.code) {
				t.Fatalf("exit code of %v: want %d", err, tc.code)
			}
		})
	}
	if out, err := runApps(t, "", "list", "--api", api, "--token-file", tokenFile); err != nil || !strings.Contains(out, "GUID") {
		t.Fatalf("list with token: %q, %v", out, err)
	}
}
