package stackconfig

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func testVectorInput() VectorInput {
	return VectorInput{
		Node:            "node-1",
		Cluster:         "prod-eu",
		DataDir:         "/var/lib/agent/vector",
		Docker:          true,
		ManagedLabel:    "io.agentproj.managed",
		GUIDLabel:       "io.agentproj.guid",
		Files:           []string{"/var/log/syslog", "/var/log/app/*.log"},
		LogsURL:         "https://manager.example/api/v1/logs",
		BearerTokenFile: "/etc/agent/logs.token",
		APIListen:       "127.0.0.1:8686",
	}
}

func TestRenderVectorGolden(t *testing.T) {
	golden(t, "vector.toml.golden", mustRender(t, RenderVector, testVectorInput()))

	in := testVectorInput()
	in.Docker, in.ManagedLabel, in.GUIDLabel, in.BearerTokenFile, in.APIListen = false, "", "", "", ""
	golden(t, "vector-files-only.toml.golden", mustRender(t, RenderVector, in))
}

// Vector (0.43) reads its configuration in three passes, all faked here
// because Vector cannot run on these machines: environment interpolation on
// the raw text, SECRET[backend.key] replacement on the raw text, then TOML.
var (
	vectorEnvFake    = regexp.MustCompile(`\$\$|\$([[:word:].]+)|\$\{([[:word:].]+)(?:(:?-|:?\?)([^}]*))?\}`)
	vectorSecretFake = regexp.MustCompile(`SECRET\[([[:word:]]+)\.([[:word:].]+)\]`)
)

// parseVectorFake reads b as Vector would, with no environment variables
// set: it fails where Vector would fail on a missing variable, and returns
// the secret references Vector would resolve.
func parseVectorFake(t *testing.T, b []byte) (vectorConfig, []string) {
	t.Helper()
	var vars []string
	text := vectorEnvFake.ReplaceAllStringFunc(string(b), func(m string) string {
		if m == "$$" {
			return "$"
		}
		vars = append(vars, m)
		return ""
	})
	if len(vars) > 0 {
		t.Fatalf("Vector would interpolate %v in\n%s", vars, b)
	}
	secrets := vectorSecretFake.FindAllString(text, -1)
	var cfg vectorConfig
	dec := toml.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("parse back: %v\n%s", err, b)
	}
	return cfg, secrets
}

func TestRenderVectorParsesBack(t *testing.T) {
	in := testVectorInput()
	in.LogsURL = "https://manager.example/logs?t=$TOKEN&v=$$'a'"
	cfg, secrets := parseVectorFake(t, mustRender(t, RenderVector, in))
	if !reflect.DeepEqual(secrets, []string{"SECRET[agent_manager.logs.token]"}) {
		t.Fatalf("secret references %v", secrets)
	}
	remap, err := vectorRemap(in)
	if err != nil {
		t.Fatal(err)
	}
	want := vectorConfig{
		DataDir: in.DataDir,
		API:     &vectorAPI{Enabled: true, Address: "127.0.0.1:8686"},
		Secret:  map[string]vectorSecret{"agent_manager": {Type: "directory", Path: "/etc/agent", RemoveTrailingWhitespace: true}},
		Sources: map[string]vectorSource{
			"docker": {Type: "docker_logs", IncludeLabels: []string{"io.agentproj.managed=true"}},
			"files":  {Type: "file", Include: in.Files},
		},
		Transforms: map[string]vectorTransformConfig{"enrich": {Type: "remap", Inputs: []string{"docker", "files"}, Source: remap}},
		Sinks: map[string]vectorSinkConfig{"manager": {
			Type: "http", Inputs: []string{"enrich"}, URI: in.LogsURL, Method: "post",
			Encoding: vectorEncoding{Codec: "json"},
			Auth:     &vectorAuth{Strategy: "bearer", Token: "SECRET[agent_manager.logs.token]"},
			Buffer:   vectorBuffer{Type: "disk", MaxSize: vectorDiskBufferMin, WhenFull: "block"},
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("parsed back\n%+v\nwant\n%+v", cfg, want)
	}
	stmts, err := vrlAssignmentsFake(cfg.Transforms["enrich"].Source)
	if err != nil {
		t.Fatal(err)
	}
	wantStmts := map[string]string{".node": "node-1", ".cluster": "prod-eu", "guid-label": "io.agentproj.guid"}
	if !reflect.DeepEqual(stmts, wantStmts) {
		t.Fatalf("VRL program reads %v, want %v\n%s", stmts, wantStmts, cfg.Transforms["enrich"].Source)
	}

	in.Docker, in.APIListen = false, ""
	cfg, _ = parseVectorFake(t, mustRender(t, RenderVector, in))
	if _, ok := cfg.Sources["docker"]; ok || cfg.API != nil || strings.Contains(cfg.Transforms["enrich"].Source, ".label") ||
		!reflect.DeepEqual(cfg.Transforms["enrich"].Inputs, []string{"files"}) {
		t.Fatalf("docker off: %+v", cfg)
	}
}

// TestRenderVectorHostile: every hostile value, in every field, is either
// refused naming that field or read back by Vector as it was given.
func TestRenderVectorHostile(t *testing.T) {
	for _, v := range hostile {
		for _, tc := range []struct {
			key  string
			set  func(*VectorInput) string // sets the field, returns what Vector must read
			read func(vectorConfig) string
		}{
			{"node", func(in *VectorInput) string { in.Node = v; return v }, func(c vectorConfig) string { return vrlValue(t, c, ".node") }},
			{"cluster", func(in *VectorInput) string { in.Cluster = v; return v }, func(c vectorConfig) string { return vrlValue(t, c, ".cluster") }},
			{"guid_label", func(in *VectorInput) string { in.GUIDLabel = "a" + v + "b"; return "a" + v + "b" }, func(c vectorConfig) string { return vrlValue(t, c, "guid-label") }},
			{"managed_label", func(in *VectorInput) string { in.ManagedLabel = "a" + v + "b"; return "a" + v + "b=true" }, func(c vectorConfig) string { return c.Sources["docker"].IncludeLabels[0] }},
			{"files[0]", func(in *VectorInput) string { in.Files = []string{"/var/log/" + v}; return "/var/log/" + v }, func(c vectorConfig) string { return c.Sources["files"].Include[0] }},
			{"data_dir", func(in *VectorInput) string { in.DataDir = "/var/lib/" + v; return "/var/lib/" + v }, func(c vectorConfig) string { return c.DataDir }},
			{"logs_url", func(in *VectorInput) string { in.LogsURL = "https://m.example/" + v; return "https://m.example/" + v }, func(c vectorConfig) string { return c.Sinks["manager"].URI }},
			{"api_listen", func(in *VectorInput) string { in.APIListen = "127.0.0.1:" + v; return "127.0.0.1:" + v }, func(c vectorConfig) string { return c.API.Address }},
			{"bearer_token_file", func(in *VectorInput) string { in.BearerTokenFile = "/etc/" + v; return "/etc" }, func(c vectorConfig) string { return c.Secret["agent_manager"].Path }},
		} {
			in := testVectorInput()
			want := tc.set(&in)
			b, err := RenderVector(in)
			if err != nil {
				if !strings.Contains(err.Error(), tc.key+": ") {
					t.Errorf("%s=%q: refused without naming the key: %v", tc.key, v, err)
				}
				continue
			}
			cfg, secrets := parseVectorFake(t, b)
			if got := tc.read(cfg); got != want || len(secrets) != 1 {
				t.Errorf("%s=%q: Vector reads %q (want %q), secrets %v", tc.key, v, got, want, secrets)
			}
		}
	}
}

func TestRenderVectorRejects(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*VectorInput)
		want   string
	}{
		{func(in *VectorInput) { in.Node = "" }, `render vector: node: must be lower-case letters`},
		{func(in *VectorInput) { in.DataDir = "" }, `data_dir: must be an absolute path, got ""`},
		{func(in *VectorInput) { in.GUIDLabel = "a.b\"c" }, `guid_label: must match ^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,126}[a-zA-Z0-9])?$, got "a.b\"c"`},
		{func(in *VectorInput) { in.ManagedLabel = "" }, `managed_label: must match`},
		{func(in *VectorInput) { in.Docker, in.Files = false, nil }, `docker: no source: enable docker or give files`},
		{func(in *VectorInput) { in.LogsURL = "" }, `logs_url: must be an http:// or https:// URL with a host, got ""`},
		{func(in *VectorInput) { in.LogsURL = "https://m/SECRET[agent_manager.x]" }, `logs_url: must not contain SECRET[ (a Vector secret reference), got "https://m/SECRET[agent_manager.x]"`},
		{func(in *VectorInput) { in.APIListen = "0.0.0.0:8686" }, `api_listen: must be a loopback address like 127.0.0.1:8686, got "0.0.0.0:8686"`},
		{func(in *VectorInput) { in.BearerTokenFile = "/etc/logs-token" }, `bearer_token_file: file name must match ^[A-Za-z0-9_.]+$ (Vector reads it as a secret), got "/etc/logs-token"`},
	} {
		in := testVectorInput()
		tc.mutate(&in)
		_, err := RenderVector(in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RenderVector() = %v\nwant it to contain %q", err, tc.want)
		}
	}
}

// TestVRLStringIsInert: whatever a string holds, the VRL literal vrlString
// makes of it reads back as that string, with no template in it.
func TestVRLStringIsInert(t *testing.T) {
	for _, v := range append(hostile, `\{{`, `{{`, `\`+"\n", "}}{{", `"{{.}}"`, `\\}`, `\}x}`) {
		lit, err := vrlString(v)
		if err != nil {
			t.Errorf("vrlString(%q): %v", v, err)
			continue
		}
		got, rest, err := vrlStringLiteralFake(lit)
		if err != nil || rest != "" || got != v {
			t.Errorf("vrlString(%q) = %s reads back %q, rest %q, err %v", v, lit, got, rest, err)
		}
	}
}

// TestVRLStringRefusesWhatVRLCannotRead: VRL reads \}} in a literal as an
// escape of }} and then fails on \}, so a backslash before }} has no
// spelling inside one literal.
func TestVRLStringRefusesWhatVRLCannotRead(t *testing.T) {
	for _, v := range []string{`\}}`, `a\\}}b`} {
		if lit, err := vrlString(v); err == nil {
			t.Errorf("vrlString(%q) = %s, want an error", v, lit)
		}
	}
}

// vrlValue is the string the enrich program assigns to lhs ("guid-label":
// the label key it reads the guid from).
func vrlValue(t *testing.T, c vectorConfig, lhs string) string {
	t.Helper()
	stmts, err := vrlAssignmentsFake(c.Transforms["enrich"].Source)
	if err != nil {
		t.Fatal(err)
	}
	return stmts[lhs]
}

// vrlAssignmentsFake reads the enrich program as VRL would, for the shapes
// vectorRemap writes, and fails on anything else: `.x = "lit"` lines and the
// guid block `if exists(.label."k") {`, `  .guid = .label."k"`, `}`.
func vrlAssignmentsFake(src string) (map[string]string, error) {
	out := map[string]string{}
	for src != "" {
		switch {
		case strings.HasPrefix(src, ".node = "), strings.HasPrefix(src, ".cluster = "):
			lhs, rest, _ := strings.Cut(src, " = ")
			v, rest, err := vrlStringLiteralFake(rest)
			if err != nil {
				return nil, err
			}
			out[lhs], src = v, rest
		case strings.HasPrefix(src, "if exists(.label."):
			k, rest, err := vrlStringLiteralFake(strings.TrimPrefix(src, "if exists(.label."))
			if err != nil {
				return nil, err
			}
			rest, ok := strings.CutPrefix(rest, ") {\n  .guid = .label.")
			if !ok {
				return nil, fmt.Errorf("unexpected VRL at %q", rest)
			}
			k2, rest, err := vrlStringLiteralFake(rest)
			if err != nil || k2 != k {
				return nil, fmt.Errorf("guid label %q then %q: %w", k, k2, err)
			}
			if rest, ok = strings.CutPrefix(rest, "\n}"); !ok {
				return nil, fmt.Errorf("unexpected VRL at %q", rest)
			}
			out["guid-label"], src = k, rest
		default:
			return nil, fmt.Errorf("unexpected VRL at %q", src)
		}
		var ok bool
		if src, ok = strings.CutPrefix(src, "\n"); !ok {
			return nil, fmt.Errorf("statement not ended by a newline at %q", src)
		}
	}
	return out, nil
}

// vrlStringLiteralFake reads one "..." literal at the start of s as the VRL
// 0.20 lexer and parser do (src/parser/lex.rs: string_literal, escape_code,
// template, unescape_string_literal) and returns its value and the rest of
// s. A template ({{ ... }}) in it is an error: the value would not be inert.
func vrlStringLiteralFake(s string) (value, rest string, err error) {
	if !strings.HasPrefix(s, `"`) {
		return "", s, errors.New("no string literal")
	}
	// Lexer: scan to the closing quote; every \ must start a known escape.
	body, i := s[1:], 0
	for {
		j := strings.IndexAny(body[i:], `"\`)
		if j < 0 {
			return "", s, errors.New("unterminated string literal")
		}
		i += j
		if body[i] == '"' {
			break
		}
		if i+1 >= len(body) || !strings.ContainsRune("\n'\"\\nrt{}0", rune(body[i+1])) {
			return "", s, fmt.Errorf("invalid escape in %q", body[:i+1])
		}
		i += 2
	}
	raw := body[:i]
	rest = body[i+1:]
	// Parser (template): {{ starts a template; \{{ and \}} are {{ and }}.
	var cur strings.Builder
	for p := 0; p < len(raw); {
		switch {
		case strings.HasPrefix(raw[p:], `\{{`):
			cur.WriteString("{{")
			p += 3
		case strings.HasPrefix(raw[p:], `\}}`):
			cur.WriteString("}}")
			p += 3
		case strings.HasPrefix(raw[p:], "{{"):
			return "", s, fmt.Errorf("template in %q", raw)
		default:
			cur.WriteByte(raw[p])
			p++
		}
	}
	// unescape_string_literal; \} alone panics there (unimplemented!).
	var out strings.Builder
	lit := cur.String()
	for p := 0; p < len(lit); p++ {
		if lit[p] != '\\' {
			out.WriteByte(lit[p])
			continue
		}
		p++
		c, ok := map[byte]byte{'\'': '\'', '"': '"', '\\': '\\', 'n': '\n', 'r': '\r', 't': '\t', '0': 0, '{': '{'}[lit[p]]
		if !ok {
			return "", s, fmt.Errorf(`VRL cannot unescape \%c`, lit[p])
		}
		out.WriteByte(c)
	}
	return out.String(), rest, nil
}
