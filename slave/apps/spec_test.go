package apps

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// hostile are values built to break YAML, TOML, label syntax, shells and
// paths; every field refuses them.
var hostile = []string{"../x", "$(rm -rf /)", `"`, "a\nb", "}", "a\x00b", "a b", "'; DROP", "${X}", "[x]", "a\tb", "\u2028"}

// Further values that a given kind of field refuses.
var (
	badDNSLabels = []string{"a/b", strings.Repeat("a", 64), "Upper", "-rf", "a:b", "a.b", "a_b", "a-"}
	badNames     = []string{"a/b", "-rf", "a:b", "1a", "a.b", "a-b"}
	badImages    = []string{"Upper", "-rf", "..", "a//b", "a:", "a@sha256:xyz"}
)

type mutation struct {
	name  string
	field string // the field the error must name
	apply func(m map[string]any)
}

func validBody() map[string]any {
	return map[string]any{
		"guid":    "app-1",
		"image":   "registry.example/team/app:1.0",
		"env":     map[string]any{"LOG_LEVEL": "info"},
		"args":    []any{"--port=8080"},
		"metrics": map[string]any{"port": 9100, "path": "/metrics"},
		"labels":  map[string]any{"team": "blue"},
	}
}

func hostileMutations() []mutation {
	var ms []mutation
	for _, h := range append(slices.Clone(hostile), badDNSLabels...) {
		ms = append(ms,
			mutation{"guid " + h, "guid", func(m map[string]any) { m["guid"] = h }},
			mutation{"node " + h, "node", func(m map[string]any) { m["node"] = h }},
			mutation{"chart " + h, "chart", func(m map[string]any) { m["chart"] = h }},
		)
	}
	ms = append(ms, mutation{"guid of a stack workload", "guid", func(m map[string]any) { m["guid"] = "agent-prometheus-n1" }})
	for _, h := range append(slices.Clone(hostile), badNames...) {
		ms = append(ms,
			mutation{"env name " + h, "env", func(m map[string]any) { m["env"] = map[string]any{h: "x"} }},
			mutation{"label name " + h, "labels", func(m map[string]any) { m["labels"] = map[string]any{h: "x"} }},
		)
	}
	for _, h := range append(slices.Clone(hostile), badImages...) {
		ms = append(ms, mutation{"image " + h, "image", func(m map[string]any) { m["image"] = "registry.example/team/" + h }})
	}
	for _, h := range hostile {
		ms = append(ms, mutation{"metrics path " + h, "metrics.path", func(m map[string]any) { m["metrics"] = map[string]any{"port": 9100, "path": "/" + h} }})
	}
	add := func(name, field string, f func(map[string]any)) { ms = append(ms, mutation{name, field, f}) }
	add("empty guid", "guid", func(m map[string]any) { m["guid"] = "" })
	add("empty env name", "env", func(m map[string]any) { m["env"] = map[string]any{"": "x"} })
	add("empty label name", "labels", func(m map[string]any) { m["labels"] = map[string]any{"": "x"} })
	add("image not allowed", "image", func(m map[string]any) { m["image"] = "evil.example/x:1" })
	add("image climbing out of the pattern", "image", func(m map[string]any) { m["image"] = "registry.example/../x/y" })
	add("image option", "image", func(m map[string]any) { m["image"] = "--privileged" })
	add("no image", "image", func(m map[string]any) { delete(m, "image") })
	add("no guid", "guid", func(m map[string]any) { delete(m, "guid") })
	add("env value NUL", "env.LOG_LEVEL", func(m map[string]any) { m["env"] = map[string]any{"LOG_LEVEL": "a\x00b"} })
	add("env OTEL endpoint", "env.OTEL_EXPORTER_OTLP_ENDPOINT", func(m map[string]any) {
		m["env"] = map[string]any{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://evil.example:4318"}
	})
	add("env OTEL attributes", "env.OTEL_RESOURCE_ATTRIBUTES", func(m map[string]any) { m["env"] = map[string]any{"OTEL_RESOURCE_ATTRIBUTES": "guid=other"} })
	add("env OTEL service", "env.OTEL_SERVICE_NAME", func(m map[string]any) { m["env"] = map[string]any{"OTEL_SERVICE_NAME": "other"} })
	add("arg NUL", "args[1]", func(m map[string]any) { m["args"] = []any{"ok", "a\x00b"} })
	add("port 0", "metrics.port", func(m map[string]any) { m["metrics"] = map[string]any{"port": 0} })
	add("port 65536", "metrics.port", func(m map[string]any) { m["metrics"] = map[string]any{"port": 65536} })
	add("port negative", "metrics.port", func(m map[string]any) { m["metrics"] = map[string]any{"port": -1} })
	add("port as string", "metrics.port", func(m map[string]any) { m["metrics"] = map[string]any{"port": "9100"} })
	add("relative path", "metrics.path", func(m map[string]any) { m["metrics"] = map[string]any{"port": 1, "path": "metrics"} })
	add("path query", "metrics.path", func(m map[string]any) { m["metrics"] = map[string]any{"port": 1, "path": "/m?x=1"} })
	add("path fragment", "metrics.path", func(m map[string]any) { m["metrics"] = map[string]any{"port": 1, "path": "/m#x"} })
	for _, l := range ReservedLabels {
		add("label "+l, "labels", func(m map[string]any) { m["labels"] = map[string]any{l: "x"} })
	}
	add("label __address__", "labels", func(m map[string]any) { m["labels"] = map[string]any{"__address__": "169.254.169.254:80"} })
	add("label __metrics_path__", "labels", func(m map[string]any) { m["labels"] = map[string]any{"__metrics_path__": "/x"} })
	add("label value newline", "labels.team", func(m map[string]any) { m["labels"] = map[string]any{"team": "a\nb: c"} })
	add("label value NUL", "labels.team", func(m map[string]any) { m["labels"] = map[string]any{"team": "a\x00"} })
	add("privileged", "privileged", func(m map[string]any) { m["privileged"] = true })
	add("mounts", "mounts", func(m map[string]any) { m["mounts"] = []any{map[string]any{"source": "/", "target": "/host"}} })
	add("cap_add", "cap_add", func(m map[string]any) { m["cap_add"] = []any{"SYS_ADMIN"} })
	add("env as array", "env", func(m map[string]any) { m["env"] = []any{"A=B"} })
	add("args as string", "args", func(m map[string]any) { m["args"] = "rm -rf /" })
	return ms
}

// TestHostileRequestsAreRefused posts each hostile request through the API
// and expects 400 naming the field, and nothing written.
func TestHostileRequestsAreRefused(t *testing.T) {
	f := newFixture(t, []string{"n1"})
	if a := f.post(mustJSON(t, validBody())); a.code != http.StatusCreated {
		t.Fatalf("the valid base body = %d %s", a.code, a.body)
	}
	for _, m := range hostileMutations() {
		t.Run(m.name, func(t *testing.T) {
			body := validBody()
			body["guid"] = "app-2"
			m.apply(body)
			a := f.post(mustJSON(t, body))
			if a.code != http.StatusBadRequest || !strings.HasPrefix(a.err(), m.field+": ") {
				t.Fatalf("POST = %d %s, want 400 starting with %q", a.code, a.body, m.field+": ")
			}
		})
	}
	if n := f.count(testKeys.Apps()); n != 1 {
		t.Fatalf("%d records, want only the valid one", n)
	}
}

func TestDecodeAppMessages(t *testing.T) {
	policy := ImagePolicy(testImages)
	for _, tc := range []struct{ body, want string }{
		{`{"guid":"UP","image":"busybox:1"}`, `guid: must be a DNS label (lower-case letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit), got "UP"`},
		{`{"guid":"a","image":"nginx:1"}`, `image: must match one of api.allowed_images (registry.example/*/*, busybox:*), got "nginx:1"`},
		{`{"guid":"a","image":"busybox:1","privileged":true}`, `privileged: unknown field`},
		{`{"guid":"a","image":"busybox:1"} {}`, `body: must hold a single JSON object, found data after it`},
		{`{"guid":"a","image":"busybox:1"} x`, `body: invalid character`},
		{``, `body: must be a JSON object, got nothing`},
		{`[]`, `body: json: cannot unmarshal array`},
		{`{"guid":"a","image":"busybox:1","metrics":{"port":"80"}}`, `metrics.port: must be a JSON integer, got string`},
		{`{"guid":"a","image":"busybox:1","env":{"A":"b"},"labels":{"job":"x"}}`, `labels: "job" is set by the agent`},
		// encoding/json would take these: keys match fields case-insensitively
		// and the last of two equal keys wins.
		{`{"GUID":"a","image":"busybox:1"}`, `GUID: field names are case-sensitive: use "guid"`},
		{`{"guid":"a","image":"busybox:1","Image":"nginx:1"}`, `Image: field names are case-sensitive: use "image"`},
		{`{"guid":"a","guid":"b","image":"busybox:1"}`, `guid: duplicate key "guid": each key may appear once in an object`},
		{`{"guid":"a","image":"busybox:1","image":"nginx:1"}`, `image: duplicate key "image"`},
		{`{"guid":"a","image":"busybox:1","metrics":{"port":80,"PORT":81}}`, `metrics.PORT: field names are case-sensitive: use "port"`},
		{`{"guid":"a","image":"busybox:1","env":{"A":"1","A":"2"}}`, `env.A: duplicate key "A"`},
		{`{"guid":"a","image":"busybox:1","args":[{"x":1,"x":2}]}`, `args[0].x: duplicate key "x"`},
	} {
		_, err := DecodeApp(strings.NewReader(tc.body), policy)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeApp(%q) = %v, want %q", tc.body, err, tc.want)
		}
	}
	// An app may name a chart instead of an image; a chart name is a DNS
	// label, and an image, when given, is still checked.
	if spec, err := DecodeApp(strings.NewReader(`{"guid":"a","chart":"web"}`), policy); err != nil || spec.Chart != "web" || spec.Image != "" {
		t.Fatalf("app by chart: %+v, %v", spec, err)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"guid":"a","chart":"Web/x"}`, `chart: must be the name of one of the agent's stack.helm.app_charts (a DNS label), got "Web/x"`},
		{`{"guid":"a","chart":"web","image":"nginx:1"}`, `image: must match one of api.allowed_images`},
		{`{"guid":"a"}`, `image: must be an image reference`},
	} {
		if _, err := DecodeApp(strings.NewReader(tc.body), policy); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeApp(%q) = %v, want %q", tc.body, err, tc.want)
		}
	}
	if err := CheckChart("web", nil); err == nil || err.Error() != `chart: no chart is allowed: stack.helm.app_charts must be configured on the agent, got "web"` {
		t.Errorf("CheckChart with no charts = %v", err)
	}
	if err := CheckChart("db", []string{"web", "cache"}); err == nil || err.Error() != `chart: must be one of stack.helm.app_charts (web, cache), got "db"` {
		t.Errorf("CheckChart(db) = %v", err)
	}
	if CheckChart("", nil) != nil || CheckChart("web", []string{"web"}) != nil {
		t.Error("CheckChart refuses an app without a chart or with an allowed one")
	}
	// Environment names and labels are case-sensitive data, not fields.
	if spec, err := DecodeApp(strings.NewReader(`{"guid":"a","image":"busybox:1","env":{"A":"1","a":"2"}}`), policy); err != nil || len(spec.Env) != 2 {
		t.Fatalf("env A and a: %+v, %v", spec.Env, err)
	}
	_, err := DecodeApp(strings.NewReader(`{"guid":"a","image":"busybox:1"}`), nil)
	if err == nil || !strings.Contains(err.Error(), "api.allowed_images must be configured") {
		t.Fatalf("empty allow-list: %v", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "image" {
		t.Fatalf("empty allow-list error is %T %v, want a FieldError for image", err, err)
	}
}

func TestExamplesAreValid(t *testing.T) {
	for _, name := range []string{"minimal.json", "full.json", "pinned.json"} {
		if _, err := DecodeApp(strings.NewReader(string(readExample(t, name))), ImagePolicy{"registry.example/*/*"}); err != nil {
			t.Errorf("testdata/apps/%s: %v", name, err)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
