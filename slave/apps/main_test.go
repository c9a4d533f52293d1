package apps

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.ClientLeaks()...)
}

var testKeys = etcd.NewKeys("/agent", "test")

var testImages = []string{"registry.example/*/*", "busybox:*"}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fixture is an apps API on a real embedded etcd.
type fixture struct {
	t   *testing.T
	cli *clientv3.Client
	h   *Handler
	reg *prometheus.Registry
	srv *httptest.Server
}

type fixtureOpt func(*HandlerConfig, *string)

func withToken(tok string) fixtureOpt { return func(_ *HandlerConfig, t *string) { *t = tok } }

func withMaxBody(n int64) fixtureOpt {
	return func(c *HandlerConfig, _ *string) { c.MaxBodyBytes = n }
}

// newFixture starts etcd, registers members, and serves the API.
func newFixture(t *testing.T, members []string, opts ...fixtureOpt) *fixture {
	t.Helper()
	cli := etcdtest.Start(t).Client()
	cfg := HandlerConfig{Keys: testKeys, AllowedImages: testImages}
	token := ""
	for _, o := range opts {
		o(&cfg, &token)
	}
	f := &fixture{t: t, cli: cli, reg: prometheus.NewRegistry()}
	f.h = NewHandler(cli, cfg, quiet(), f.reg)
	mux := http.NewServeMux()
	f.h.Register(mux, NewToken(token))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	for _, m := range members {
		f.addMember(m)
	}
	return f
}

func (f *fixture) addMember(node string) {
	f.t.Helper()
	v, _ := json.Marshal(etcd.Member{Node: node, API: "127.0.0.1:1"})
	f.put(testKeys.Member(node), string(v))
}

func (f *fixture) put(key, val string) {
	f.t.Helper()
	if _, err := f.cli.Put(context.Background(), key, val); err != nil {
		f.t.Fatal(err)
	}
}

// putApp writes a record directly, as if created earlier.
func (f *fixture) putApp(guid, node string) {
	f.t.Helper()
	v, _ := json.Marshal(Record{Spec: AppSpec{GUID: guid, Image: "busybox:1"}, Node: node, Created: time.Now()})
	f.put(testKeys.App(guid), string(v))
}

func (f *fixture) count(prefix string) int64 {
	f.t.Helper()
	resp, err := f.cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.Count
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

func (a answer) err() string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error
}

func (a answer) view(t *testing.T) AppView {
	t.Helper()
	var v AppView
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
	return v
}

// do sends a request; body is sent as application/json unless ctype says
// otherwise; token "" sends no Authorization.
func (f *fixture) do(method, path, ctype, token string, body []byte) answer {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/json" {
		f.t.Errorf("%s %s: error answer %d is not JSON: %q", method, path, resp.StatusCode, b)
	}
	return answer{code: resp.StatusCode, header: resp.Header, body: b}
}

func (f *fixture) post(body []byte) answer {
	f.t.Helper()
	return f.do(http.MethodPost, "/api/v1/apps", "application/json", "", body)
}

func readExample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "apps", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
