package stackconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/pelletier/go-toml/v2"
)

func TestDefaultRelayIsValidAndDisabled(t *testing.T) {
	if err := DefaultRelay.Validate(); err != nil {
		t.Fatal(err)
	}
	if DefaultRelay.Enabled() {
		t.Fatal("relay enabled without upstream")
	}
}

func TestRelayValidateNamesFieldAndValue(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Relay)
		want   string
	}{
		{func(r *Relay) { r.QueueMaxBytes = -1 }, "relay.queue_max_bytes: must be > 0, got -1"},
		{func(r *Relay) { r.QueueMinFreeBytes = -1 }, "relay.queue_min_free_bytes: must be >= 0, got -1"},
		{func(r *Relay) { r.Upstream = Upstreams("ftp://x") }, `relay.upstream[0]: must be an http or https URL, got "ftp://x"`},
		{func(r *Relay) { r.Upstream = Upstreams("http://a/w", "http://a/w") }, `relay.upstream[1]: listed twice, got "http://a/w"`},
		{func(r *Relay) { r.Upstream = []RelayUpstream{{URL: "http://a/w", Protocol: "3"}} }, `relay.upstream[0].protocol: must be auto, 1.0 or 2.0, got "3"`},
		{func(r *Relay) { r.Upstream = []RelayUpstream{{URL: "http://a/w", NameEscaping: "dots"}} }, `relay.upstream[0].name_escaping: must be none, underscores or values, got "dots"`},
		{func(r *Relay) { r.NameValidation = "ascii" }, `relay.name_validation: must be utf8 or legacy, got "ascii"`},
		{func(r *Relay) { r.ExternalLabels = map[string]string{"a-b": "x"} }, `relay.external_labels: label name must match [a-zA-Z_][a-zA-Z0-9_]*, got "a-b"`},
		{func(r *Relay) { r.ExternalLabels = map[string]string{"env": ""} }, "relay.external_labels.env: must not be empty"},
		{func(r *Relay) { r.QueueDir = "rel/dir" }, `relay.queue_dir: must be an absolute path, got "rel/dir"`},
		{func(r *Relay) { r.MaxRequestBytes = 0 }, "relay.max_request_bytes: must be > 0, got 0"},
		{func(r *Relay) { r.QueueMaxBytes = r.MaxRequestBytes }, "relay.queue_max_bytes: must be at least twice max_request_bytes"},
		{func(r *Relay) { r.MaxSamplesPerSend = 0 }, "relay.max_samples_per_send: must be > 0, got 0"},
		{func(r *Relay) { r.Concurrency = 0 }, "relay.concurrency: must be between 1 and 256, got 0"},
		{func(r *Relay) { r.MinBackoff = 0 }, "relay.min_backoff: must be > 0, got 0s"},
		{func(r *Relay) { r.MaxBackoff = time.Millisecond }, "relay.max_backoff: must be >= min_backoff (100ms), got 1ms"},
		{func(r *Relay) { r.FlushDeadline = -time.Second }, "relay.flush_deadline: must be >= 0, got -1s"},
		{func(r *Relay) { r.RemoteTimeout = 0 }, "relay.remote_timeout: must be > 0, got 0s"},
		{func(r *Relay) { r.Headers = map[string]string{"Content-Type": "x"} }, `relay.headers: "Content-Type" is set by the relay`},
		{func(r *Relay) { r.Headers = map[string]string{"bad header": "x"} }, `relay.headers: invalid header name "bad header"`},
		{func(r *Relay) { r.BearerTokenFile, r.BasicAuth.Username = "/t", "u" }, `relay.bearer_token_file: cannot be combined with basic_auth, got "/t"`},
		{func(r *Relay) { r.BasicAuth.PasswordFile = "/p" }, "relay.basic_auth.username: must be set when password_file is"},
		{func(r *Relay) { r.TLS.CertFile = "/c" }, `relay.tls: cert_file and key_file must be set together, got cert_file="/c" key_file=""`},
	} {
		r := DefaultRelay
		tc.mutate(&r)
		err := r.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, tc.want)
		}
	}
}

func TestRelayWithAgentDefaults(t *testing.T) {
	r := DefaultRelay
	r.ExternalLabels = map[string]string{"env": "prod"}
	got := r.WithAgentDefaults("c1", "/var/lib/agent")
	if got.ExternalLabels["cluster"] != "c1" || got.ExternalLabels["env"] != "prod" || got.QueueDir != "/var/lib/agent/relay" {
		t.Fatalf("got labels %v, queue_dir %q", got.ExternalLabels, got.QueueDir)
	}
	if _, ok := r.ExternalLabels["cluster"]; ok {
		t.Fatal("WithAgentDefaults modified its receiver's map")
	}
	r.ExternalLabels, r.QueueDir = map[string]string{"cluster": "own"}, "/q"
	if got := r.WithAgentDefaults("c1", "/d"); got.ExternalLabels["cluster"] != "own" || got.QueueDir != "/q" {
		t.Fatalf("explicit values overridden: %v %q", got.ExternalLabels, got.QueueDir)
	}
}

// TestRelayDecodesFromTOML decodes a TOML section the way the loader does
// (TOML to a map, then mapstructure with a duration hook) on top of the
// defaults, rejecting unknown keys.
func TestRelayDecodesFromTOML(t *testing.T) {
	const doc = `
upstream = ["https://manager.example/api/v1/write", { url = "http://old.example/api/v1/write", protocol = "1.0", name_escaping = "values" }]
name_validation = "legacy"
external_labels = { cluster = "c9", region = "eu" }
queue_max_bytes = 536870912
queue_min_free_bytes = 0
max_backoff = "1m"
concurrency = 2
[basic_auth]
username = "relay"
password_file = "/etc/agent/pw"
[tls]
ca_file = "/etc/agent/ca.pem"
`
	var raw map[string]any
	if err := toml.Unmarshal([]byte(doc), &raw); err != nil {
		t.Fatal(err)
	}
	r := DefaultRelay
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result: &r, ErrorUnused: true, DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(), mapstructure.TextUnmarshallerHookFunc()),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(raw); err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := []RelayUpstream{{URL: "https://manager.example/api/v1/write"}, {URL: "http://old.example/api/v1/write", Protocol: "1.0", NameEscaping: "values"}}; !reflect.DeepEqual(r.Upstream, want) || r.NameValidation != "legacy" {
		t.Fatalf("upstream %+v, name_validation %q", r.Upstream, r.NameValidation)
	}
	if r.ExternalLabels["region"] != "eu" ||
		r.QueueMaxBytes != 512<<20 || r.QueueMinFreeBytes != 0 || r.MaxBackoff != time.Minute || r.Concurrency != 2 ||
		r.BasicAuth.PasswordFile != "/etc/agent/pw" || r.TLS.CAFile != "/etc/agent/ca.pem" ||
		r.MaxSamplesPerSend != DefaultRelay.MaxSamplesPerSend {
		t.Fatalf("decoded %+v", r)
	}
}

// TestRelayUpstreamsThroughTheLoader: upstreams as URLs or tables in the
// file, and as comma-separated URLs in the flag and the environment.
func TestRelayUpstreamsThroughTheLoader(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.toml")
	doc := `node = "n1"
[relay]
upstream = ["http://a.example/w", { url = "http://b.example/w", protocol = "2.0" }]
`
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file, joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if want := []RelayUpstream{{URL: "http://a.example/w"}, {URL: "http://b.example/w", Protocol: "2.0"}}; !reflect.DeepEqual(cfg.Relay.Upstream, want) {
		t.Fatalf("from the file: %+v", cfg.Relay.Upstream)
	}
	cfg, err = Load("", joinFlags(t, "--node", "n1", "--relay-upstream", "http://c.example/w,http://d.example/w"), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if want := Upstreams("http://c.example/w", "http://d.example/w"); !reflect.DeepEqual(cfg.Relay.Upstream, want) {
		t.Fatalf("from the flag: %+v", cfg.Relay.Upstream)
	}
	t.Setenv("AGENT_RELAY_UPSTREAM", "http://e.example/w")
	cfg, err = Load("", joinFlags(t, "--node", "n1"), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if want := Upstreams("http://e.example/w"); !reflect.DeepEqual(cfg.Relay.Upstream, want) || cfg.Relay.NameValidation != NamesUTF8 {
		t.Fatalf("from the environment: %+v (name_validation %q)", cfg.Relay.Upstream, cfg.Relay.NameValidation)
	}
	t.Setenv("AGENT_RELAY_UPSTREAM", "")
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("node = \"n1\"\n[relay]\nupstream = [{ url = \"http://a/w\", proto_col = \"1.0\" }]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad, joinFlags(t), JoinOptions); err == nil || !strings.Contains(err.Error(), "proto_col") {
		t.Fatalf("unknown upstream key: err = %v", err)
	}
}
