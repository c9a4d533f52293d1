package push

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/master/relay/relaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream is the manager's side of the relay: what it received.
type upstream struct{ *relaytest.Upstream }

func newUpstream(t *testing.T) upstream { return upstream{relaytest.NewUpstream(t)} }

// got renders every received series as name{labels}=value.
func (u upstream) got() map[string]float64 {
	out := map[string]float64{}
	for _, ts := range u.Series() {
		var b strings.Builder
		b.WriteString(ts.Labels[0].Value + "{")
		for i, l := range ts.Labels[1:] {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(l.Name + "=" + l.Value)
		}
		b.WriteString("}")
		for _, s := range ts.Samples {
			out[b.String()] = s.Value
		}
	}
	return out
}

func newTestHandler(app Appender) *Handler {
	return NewHandler(Config{Node: "n1", Cluster: "c1", MaxBodyBytes: 1 << 20}, app, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
}

func do(h http.Handler, method, target, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// pushOK pushes until the relay runs (it answers 503 before), then wants 204.
func pushOK(t *testing.T, h http.Handler, target, contentType, body string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec := do(h, http.MethodPost, target, contentType, body)
		if rec.Code == http.StatusNoContent {
			return
		}
		if rec.Code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("push: %d %s", rec.Code, rec.Body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, cond, "waiting for %s", what)
}

func TestPushBothFormatsReachTheUpstream(t *testing.T) {
	up := newUpstream(t)
	h := newTestHandler(relaytest.Start(t, up.URL))
	pushOK(t, h, "/api/v1/push?ns=team-a", "text/plain; version=0.0.4", "# TYPE jobs_done counter\njobs_done{queue=\"mail\"} 42\n")
	pushOK(t, h, "/api/v1/push?ns=team-b", "", `[{"name": "disk_free", "tags": {"mount": "/"}, "value": 1.5}]`)
	pushOK(t, h, "/api/v1/push?ns=team-c", "application/json", `[{"name": "load", "value": 0.5, "timestamp": 1700000000000}]`)
	want := map[string]float64{
		"jobs_done{cluster=c1,node=n1,ns=team-a,queue=mail}": 42,
		"disk_free{cluster=c1,mount=/,node=n1,ns=team-b}":    1.5,
		"load{cluster=c1,node=n1,ns=team-c}":                 0.5,
	}
	waitFor(t, "pushed series upstream", func() bool { return len(up.got()) == len(want) })
	for k, v := range want {
		if got, ok := up.got()[k]; !ok || got != v {
			t.Errorf("upstream lacks %s=%v; got %v", k, v, up.got())
		}
	}
}

// A bad line fails the whole request: 400 naming the line, and nothing of
// it reaches the queue (a good push after it arrives alone).
func TestBadLineKeepsNothing(t *testing.T) {
	up := newUpstream(t)
	h := newTestHandler(relaytest.Start(t, up.URL))
	pushOK(t, h, "/api/v1/push?ns=a", "", "first 1\n")
	rec := do(h, http.MethodPost, "/api/v1/push?ns=a", "", "good 1\nalso_good{x=\"1\"} 2\nbad{x=\"1\" 3\n")
	var e struct{ Error string }
	if rec.Code != http.StatusBadRequest || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, "line 3: ") || !strings.Contains(e.Error, "nothing of this request was kept") {
		t.Fatalf("bad line: %d %s", rec.Code, rec.Body)
	}
	rec = do(h, http.MethodPost, "/api/v1/push?ns=a", "application/json", "[\n{\"name\":\"good\",\"value\":1},\n{\"name\":\"bad\"}\n]")
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "line 3: element 1: bad: value: missing") {
		t.Fatalf("bad JSON element: %d %s", rec.Code, rec.Body)
	}
	pushOK(t, h, "/api/v1/push?ns=a", "", "last 1\n")
	waitFor(t, "first and last upstream", func() bool { return len(up.got()) >= 2 })
	for k := range up.got() {
		if !strings.HasPrefix(k, "first{") && !strings.HasPrefix(k, "last{") {
			t.Fatalf("a sample of a refused request reached the upstream: %s", k)
		}
	}
}

func TestRefusals(t *testing.T) {
	up := newUpstream(t)
	h := newTestHandler(relaytest.Start(t, up.URL))
	pushOK(t, h, "/api/v1/push?ns=a", "", "") // empty: nothing to store, 204
	for _, c := range []struct {
		name, method, target, ct, body string
		code                           int
		want                           string
	}{
		{"GET", http.MethodGet, "/api/v1/push?ns=a", "", "", 405, "use POST"},
		{"no ns", http.MethodPost, "/api/v1/push", "", "a 1\n", 400, "ns: must be given once"},
		{"bad ns", http.MethodPost, "/api/v1/push?ns=a%20b", "", "a 1\n", 400, `ns: must be given once and be letters, digits`},
		{"two ns", http.MethodPost, "/api/v1/push?ns=a&ns=b", "", "a 1\n", 400, "ns: must be given once"},
		{"unknown param", http.MethodPost, "/api/v1/push?ns=a&job=x", "", "a 1\n", 400, `unknown query parameter "job"`},
		{"agent label", http.MethodPost, "/api/v1/push?ns=a", "", "a{node=\"x\"} 1\n", 400, `line 1: a: label "node" is set by the agent`},
		{"content type", http.MethodPost, "/api/v1/push?ns=a", "application/openmetrics-text; version=9", "a 1\n", 415, "OpenMetrics version"},
		{"too large", http.MethodPost, "/api/v1/push?ns=a", "", strings.Repeat("a 1\n", 1<<19), 413, "push.max_body_bytes"},
	} {
		rec := do(h, c.method, c.target, c.ct, c.body)
		var e struct{ Error string }
		if rec.Code != c.code || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, c.want) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, rec.Code, rec.Body, c.code, c.want)
		}
	}
	if rec := do(h, http.MethodGet, "/api/v1/push?ns=a", "", ""); rec.Header().Get("Allow") != http.MethodPost {
		t.Errorf("405 without Allow: POST")
	}
}

func TestWithoutRelay(t *testing.T) {
	h := newTestHandler(nil)
	rec := do(h, http.MethodPost, "/api/v1/push?ns=a", "", "a 1\n")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "relay.upstream") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

// A reloaded push.max_body_bytes (SIGHUP) applies to the next request.
func TestSetMaxBodyBytes(t *testing.T) {
	h := newTestHandler(relaytest.Start(t, newUpstream(t).URL))
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, "a_%d 1\n", i)
	}
	body := b.String()
	pushOK(t, h, "/api/v1/push?ns=a", "", body)
	h.SetMaxBodyBytes(100)
	rec := do(h, http.MethodPost, "/api/v1/push?ns=a", "", body)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "body exceeds 100 bytes (push.max_body_bytes)") {
		t.Fatalf("%d-byte push after max_body_bytes = 100: %d %s, want 413", len(body), rec.Code, rec.Body)
	}
}
