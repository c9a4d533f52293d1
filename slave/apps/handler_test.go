package apps

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCreateGetDelete(t *testing.T) {
	f := newFixture(t, []string{"n1", "n2"})
	body := readExample(t, "full.json")

	a := f.post(body)
	if a.code != http.StatusCreated {
		t.Fatalf("POST = %d %s, want 201", a.code, a.body)
	}
	created := a.view(t)
	if created.GUID != "billing-7f3a" || !slices.Contains([]string{"n1", "n2"}, created.Node) || created.Pinned || created.Created.IsZero() {
		t.Fatalf("created %+v", created)
	}
	if created.Spec.Metrics == nil || created.Spec.Metrics.Path != "/internal/metrics" || created.Spec.Env["LOG_LEVEL"] != "info" {
		t.Fatalf("spec not stored as sent: %+v", created.Spec)
	}
	if got := a.header.Get("Location"); got != "/api/v1/apps/billing-7f3a" {
		t.Errorf("Location = %q", got)
	}

	// A retried request is answered with the stored record.
	again := f.post(body)
	if again.code != http.StatusOK || !again.view(t).Created.Equal(created.Created) || again.view(t).Node != created.Node {
		t.Fatalf("same POST again = %d %s, want 200 with the first record", again.code, again.body)
	}
	// A different spec for the guid is a conflict, and changes nothing.
	changed := strings.Replace(string(body), "2.0.1", "2.0.2", 1)
	if c := f.post([]byte(changed)); c.code != http.StatusConflict || !strings.Contains(c.err(), "different spec") {
		t.Fatalf("changed POST = %d %s, want 409", c.code, c.body)
	}

	g := f.do(http.MethodGet, "/api/v1/apps/billing-7f3a", "", "", nil)
	if g.code != http.StatusOK || g.view(t).Spec.Image != "registry.example/billing/api:2.0.1" || g.view(t).Status != nil {
		t.Fatalf("GET = %d %s", g.code, g.body)
	}
	if d := f.do(http.MethodDelete, "/api/v1/apps/billing-7f3a", "", "", nil); d.code != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s, want 204", d.code, d.body)
	}
	if f.count(testKeys.Apps()) != 0 {
		t.Fatal("record still in etcd after DELETE")
	}
	if d := f.do(http.MethodDelete, "/api/v1/apps/billing-7f3a", "", "", nil); d.code != http.StatusNotFound || !strings.Contains(d.err(), `app "billing-7f3a" not found`) {
		t.Fatalf("DELETE again = %d %s, want 404", d.code, d.body)
	}
	if g := f.do(http.MethodGet, "/api/v1/apps/billing-7f3a", "", "", nil); g.code != http.StatusNotFound {
		t.Fatalf("GET after DELETE = %d %s, want 404", g.code, g.body)
	}
	if got := testutil.ToFloat64(f.h.m.created); got != 1 {
		t.Errorf("created_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.h.m.deleted); got != 1 {
		t.Errorf("deleted_total = %v, want 1", got)
	}
}

func TestIdempotentWithDefaultsSpelledOut(t *testing.T) {
	f := newFixture(t, []string{"n1"})
	if a := f.post([]byte(`{"guid":"a","image":"busybox:1","metrics":{"port":80}}`)); a.code != http.StatusCreated {
		t.Fatalf("POST = %d %s", a.code, a.body)
	}
	if a := f.post([]byte(`{"guid":"a","image":"busybox:1","metrics":{"port":80,"path":"/metrics"},"env":{},"args":[]}`)); a.code != http.StatusOK {
		t.Fatalf("same spec with defaults spelled out = %d %s, want 200", a.code, a.body)
	}
}

func TestStatusCodes(t *testing.T) {
	f := newFixture(t, []string{"n1"}, withMaxBody(1024))
	big := fmt.Sprintf(`{"guid":"big","image":"busybox:1","env":{"X":%q}}`, strings.Repeat("x", 2000))
	for _, tc := range []struct {
		name, method, path, ctype, body string
		code                            int
		msg                             string
	}{
		{"too large", "POST", "/api/v1/apps", "application/json", big, http.StatusRequestEntityTooLarge, "larger than api.max_body_bytes (1024 bytes)"},
		{"form body", "POST", "/api/v1/apps", "application/x-www-form-urlencoded", `{"guid":"a","image":"busybox:1"}`, http.StatusUnsupportedMediaType, "Content-Type: must be application/json"},
		{"no content type", "POST", "/api/v1/apps", "", `{"guid":"a","image":"busybox:1"}`, http.StatusUnsupportedMediaType, "Content-Type"},
		{"json with charset", "POST", "/api/v1/apps", "application/json; charset=utf-8", `{"guid":"a","image":"busybox:1"}`, http.StatusCreated, ""},
		{"get missing", "GET", "/api/v1/apps/nope", "", "", http.StatusNotFound, `app "nope" not found`},
		{"get bad guid", "GET", "/api/v1/apps/Nope", "", "", http.StatusBadRequest, "guid: must be a DNS label"},
		{"wrong method", "PUT", "/api/v1/apps", "application/json", "{}", http.StatusMethodNotAllowed, "method PUT not allowed"},
		{"wrong method on app", "POST", "/api/v1/apps/a", "application/json", "{}", http.StatusMethodNotAllowed, "allowed: GET, DELETE"},
		{"deep path", "GET", "/api/v1/apps/a/b", "", "", http.StatusNotFound, "no such endpoint"},
		{"pinned to a dead node", "POST", "/api/v1/apps", "application/json", `{"guid":"p","image":"busybox:1","node":"n9"}`, http.StatusBadRequest, `node: must name a live member, got "n9" (live: n1)`},
		{"case variant key", "POST", "/api/v1/apps", "application/json", `{"GUID":"c","image":"busybox:1"}`, http.StatusBadRequest, `GUID: field names are case-sensitive: use "guid"`},
		{"duplicate key", "POST", "/api/v1/apps", "application/json", `{"guid":"d","guid":"e","image":"busybox:1"}`, http.StatusBadRequest, `guid: duplicate key "guid"`},
		{"chart not configured", "POST", "/api/v1/apps", "application/json", `{"guid":"ch","chart":"web"}`, http.StatusBadRequest, `chart: no chart is allowed: stack.helm.app_charts must be configured on the agent, got "web"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.do(tc.method, tc.path, tc.ctype, "", []byte(tc.body))
			if a.code != tc.code || !strings.Contains(a.err(), tc.msg) {
				t.Fatalf("%s %s = %d %s, want %d with %q", tc.method, tc.path, a.code, a.body, tc.code, tc.msg)
			}
		})
	}
	if n := f.count(testKeys.Apps()); n != 1 {
		t.Fatalf("%d records, want only the one valid request's", n)
	}
}

func TestTokenRequired(t *testing.T) {
	f := newFixture(t, []string{"n1"}, withToken("s3cret"))
	body := readExample(t, "minimal.json")
	for _, tc := range []struct {
		name, auth string
	}{
		{"no header", ""},
		{"wrong token", "Bearer s3cre"},
		{"longer token", "Bearer s3cret2"},
		{"basic scheme", "Basic s3cret"},
		{"empty bearer", "Bearer "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, m := range []struct{ method, path string }{{"POST", "/api/v1/apps"}, {"GET", "/api/v1/apps"}, {"DELETE", "/api/v1/apps/shop-web"}} {
				req, _ := http.NewRequest(m.method, f.srv.URL+m.path, strings.NewReader(string(body)))
				req.Header.Set("Content-Type", "application/json")
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || resp.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("%s %s = %d, WWW-Authenticate %q, want 401 Bearer JSON", m.method, m.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	if n := f.count(testKeys.Apps()); n != 0 {
		t.Fatalf("an unauthorized request wrote %d records", n)
	}
	if got := testutil.ToFloat64(f.h.m.rejected.WithLabelValues("401")); got != 15 {
		t.Fatalf("agent_apps_requests_rejected_total{code=\"401\"} = %v, want the 15 refused requests", got)
	}
	if a := f.do("POST", "/api/v1/apps", "application/json", "s3cret", body); a.code != http.StatusCreated {
		t.Fatalf("POST with token = %d %s", a.code, a.body)
	}
}

func TestNoTokenConfiguredIsOpen(t *testing.T) {
	f := newFixture(t, []string{"n1"})
	if a := f.post(readExample(t, "minimal.json")); a.code != http.StatusCreated {
		t.Fatalf("POST without token on an open API = %d %s", a.code, a.body)
	}
}

func TestRequireTokenEmptyRefusesAll(t *testing.T) {
	called := false
	h := RequireToken(NewToken(""), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	for _, auth := range []string{"", "Bearer ", "Bearer x"} {
		req, _ := http.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || called {
			t.Fatalf("auth %q: code %d, called %v", auth, rec.Code, called)
		}
	}
}

func TestConcurrentCreateOfOneGUID(t *testing.T) {
	f := newFixture(t, []string{"n1", "n2", "n3"})
	const n = 16
	codes := make([]int, n)
	images := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		images[i] = fmt.Sprintf("busybox:%d", i%2) // two different specs race
		body := fmt.Sprintf(`{"guid":"race","image":%q}`, images[i])
		wg.Go(func() {
			req, _ := http.NewRequest("POST", f.srv.URL+"/api/v1/apps", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	g := f.do("GET", "/api/v1/apps/race", "", "", nil)
	winner := g.view(t).Spec.Image
	created := 0
	for i, c := range codes {
		switch {
		case c == http.StatusCreated:
			created++
			if images[i] != winner {
				t.Errorf("request %d got 201 for %s, but %s is stored", i, images[i], winner)
			}
		case c == http.StatusOK && images[i] == winner, c == http.StatusConflict && images[i] != winner:
		default:
			t.Errorf("request %d (%s) = %d; stored %s", i, images[i], c, winner)
		}
	}
	if created != 1 {
		t.Fatalf("%d requests got 201, want exactly 1 (codes %v)", created, codes)
	}
	resp, err := f.cli.Get(t.Context(), testKeys.App("race"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Version != 1 {
		t.Fatalf("record written more than once: %v %v", resp, err)
	}
}

func TestPlacementFewestApps(t *testing.T) {
	f := newFixture(t, []string{"n1", "n2", "n3"})
	f.putApp("a1", "n1")
	f.putApp("a2", "n1")
	f.putApp("a3", "n2")
	f.putApp("gone", "n9") // a dead node's apps do not count for anyone
	place := func(guid string) string {
		t.Helper()
		a := f.post([]byte(fmt.Sprintf(`{"guid":%q,"image":"busybox:1"}`, guid)))
		if a.code != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", guid, a.code, a.body)
		}
		return a.view(t).Node
	}
	if got := place("b1"); got != "n3" {
		t.Fatalf("b1 placed on %s, want n3 (no apps)", got)
	}
	if got := place("b2"); got != "n2" { // n2 and n3 have one each: the smaller name
		t.Fatalf("b2 placed on %s, want n2", got)
	}
	if got := place("b3"); got != "n3" {
		t.Fatalf("b3 placed on %s, want n3", got)
	}
	a := f.post(readExample(t, "pinned.json")) // node n2, the busiest now
	if a.code != http.StatusCreated || a.view(t).Node != "n2" || !a.view(t).Pinned {
		t.Fatalf("pinned POST = %d %s", a.code, a.body)
	}
}

// Concurrent creations of different guids are placed as if they came one
// after another: every node gets its share exactly.
func TestConcurrentCreatesPlacedExactly(t *testing.T) {
	f := newFixture(t, []string{"n1", "n2", "n3", "n4"})
	const n = 16
	nodes := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { // no t.Fatal off the test's goroutine: f.post is not for here
			resp, err := http.Post(f.srv.URL+"/api/v1/apps", "application/json", strings.NewReader(fmt.Sprintf(`{"guid":"app-%d","image":"busybox:1"}`, i)))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var v AppView
			if err := json.NewDecoder(resp.Body).Decode(&v); resp.StatusCode != http.StatusCreated || err != nil {
				t.Errorf("POST app-%d = %d, %v", i, resp.StatusCode, err)
				return
			}
			nodes[i] = v.Node
		})
	}
	wg.Wait()
	per := map[string]int{}
	for _, node := range nodes {
		per[node]++
	}
	if want := map[string]int{"n1": 4, "n2": 4, "n3": 4, "n4": 4}; !maps.Equal(per, want) {
		t.Fatalf("apps per node %v, want %v", per, want)
	}
}

func TestNoLiveMember(t *testing.T) {
	f := newFixture(t, nil)
	if a := f.post(readExample(t, "minimal.json")); a.code != http.StatusServiceUnavailable || !strings.Contains(a.err(), "no live member") {
		t.Fatalf("POST = %d %s, want 503", a.code, a.body)
	}
}

func TestListWithStatusAndInvalidRecords(t *testing.T) {
	f := newFixture(t, []string{"n1"})
	for _, ex := range []string{"minimal.json", "full.json"} {
		if a := f.post(readExample(t, ex)); a.code != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", ex, a.code, a.body)
		}
	}
	st, _ := json.Marshal(Status{Node: "n1", Status: "running", ID: "c0ffee", Restarts: 2})
	f.put(testKeys.AppStatus("shop-web"), string(st))
	f.put(testKeys.App("broken"), `{"spec":`)
	f.put(testKeys.App("sneaky"), `{"spec":{"guid":"sneaky","image":"busybox:1","labels":{"__address__":"169.254.169.254:80"}},"node":"n1"}`)

	for range 2 {
		a := f.do("GET", "/api/v1/apps", "", "", nil)
		var list AppList
		if err := json.Unmarshal(a.body, &list); err != nil || a.code != http.StatusOK {
			t.Fatalf("GET list = %d %s", a.code, a.body)
		}
		if len(list.Apps) != 2 || list.Apps[0].GUID != "billing-7f3a" || list.Apps[1].GUID != "shop-web" {
			t.Fatalf("apps %+v", list.Apps)
		}
		if s := list.Apps[1].Status; s == nil || s.Status != "running" || s.ID != "c0ffee" || s.Restarts != 2 {
			t.Fatalf("status of shop-web = %+v", s)
		}
		if list.Apps[0].Status != nil {
			t.Fatalf("status of billing-7f3a = %+v, want null", list.Apps[0].Status)
		}
		if len(list.Skipped) != 2 || !strings.Contains(list.Skipped[1].Reason, "__address__") {
			t.Fatalf("skipped %+v", list.Skipped)
		}
	}
	if got := testutil.ToFloat64(f.h.m.invalid); got != 2 {
		t.Fatalf("invalid records counted %v times, want 2 (once per key and revision)", got)
	}
}

// TestRecordSizeLimit: with api.max_body_bytes raised, a request whose
// record would exceed MaxRecordBytes is refused, not written for every
// node to skip.
func TestRecordSizeLimit(t *testing.T) {
	f := newFixture(t, []string{"n1"}, withMaxBody(1<<20))
	env := map[string]string{}
	for i := range 80 {
		env[fmt.Sprintf("V%d", i)] = strings.Repeat("x", 4000)
	}
	body := mustJSON(t, map[string]any{"guid": "big", "image": "busybox:1", "env": env})
	a := f.post(body)
	if a.code != http.StatusRequestEntityTooLarge || !strings.Contains(a.err(), fmt.Sprintf("larger than the %d bytes an app record may have", MaxRecordBytes)) {
		t.Fatalf("POST of a %d-byte spec = %d %s, want 413", len(body), a.code, a.body)
	}
	if n := f.count(testKeys.Apps()); n != 0 {
		t.Fatalf("%d records written", n)
	}
}

// A replaced token is the only one taken from then on; an emptied one
// takes none.
func TestTokenCanBeReplaced(t *testing.T) {
	tok := NewToken("old")
	h := RequireToken(tok, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	code := func(token string) int {
		req, _ := http.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code("old") != http.StatusNoContent || code("new") != http.StatusUnauthorized {
		t.Fatalf("before: old %d, new %d", code("old"), code("new"))
	}
	tok.Set("new")
	if code("old") != http.StatusUnauthorized || code("new") != http.StatusNoContent {
		t.Fatalf("after Set: old %d, new %d", code("old"), code("new"))
	}
	tok.Set("")
	if code("") != http.StatusUnauthorized || code("new") != http.StatusUnauthorized {
		t.Fatalf("after Set(\"\"): empty %d, new %d", code(""), code("new"))
	}
}

// A token rotated in its file is taken by the first request that carries
// it, with no reload; the old one is refused from then on. A file that
// cannot be read keeps the token.
func TestTokenFileFollowsRotation(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first\n")
	tok, err := NewTokenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Matches("first") || tok.Matches("second") {
		t.Fatal("first token not the one taken")
	}
	write("second\n")
	if !tok.Matches("second") || tok.Matches("first") {
		t.Fatal("the rotated token is not taken at once, or the old one still is")
	}
	write("")
	if tok.Matches("third") || !tok.Matches("second") {
		t.Fatal("an emptied file changed the token")
	}
	if _, err := NewTokenFile(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("a missing token file was taken")
	}
}

// A reloaded api.allowed_images and api.max_body_bytes (SIGHUP) apply to
// the next request.
func TestSetLimitsAppliesToTheNextRequest(t *testing.T) {
	f := newFixture(t, []string{"n1"})
	app := mustJSON(t, map[string]any{"guid": "cache", "image": "quay.example/cache:2"})
	if a := f.post(app); a.code != http.StatusBadRequest || !strings.Contains(a.err(), "must match one of api.allowed_images") {
		t.Fatalf("POST before the reload = %d %s, want 400 naming api.allowed_images", a.code, a.body)
	}
	f.h.SetLimits([]string{"quay.example/*"}, 200)
	if a := f.post(app); a.code != http.StatusCreated {
		t.Fatalf("POST of a now allowed image = %d %s, want 201", a.code, a.body)
	}
	big := mustJSON(t, map[string]any{"guid": "web", "image": "quay.example/web:1", "env": map[string]string{"X": strings.Repeat("x", 200)}})
	if a := f.post(big); a.code != http.StatusRequestEntityTooLarge || !strings.Contains(a.err(), "api.max_body_bytes (200 bytes)") {
		t.Fatalf("POST of %d bytes after max_body_bytes = 200: %d %s, want 413", len(big), a.code, a.body)
	}
	if a := f.post(mustJSON(t, map[string]any{"guid": "old", "image": "busybox:1"})); a.code != http.StatusBadRequest {
		t.Fatalf("POST of an image the reloaded list dropped = %d %s, want 400", a.code, a.body)
	}
}
