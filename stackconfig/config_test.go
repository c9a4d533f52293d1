package stackconfig

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func joinFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("join", pflag.ContinueOnError)
	AddFlags(fs, JoinOptions)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("../testdata/config/*.bad.toml")
	if len(files) == 0 {
		t.Fatal("no bad configs found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, notWant := expectedError(t, f)
			_, err := Load(f, joinFlags(t), JoinOptions)
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", want)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			for _, n := range notWant {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error %q\ncontains %q", err, n)
				}
			}
		})
	}
}

// expectedError reads the leading comment lines of a bad config: each
// "# error: <text>" must be in the error, each "# not: <text>" must not;
// "\n" in a text stands for a line break.
func expectedError(t *testing.T, path string) (want, notWant []string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if w, ok := strings.CutPrefix(line, "# error: "); ok {
			want = append(want, strings.ReplaceAll(w, `\n`, "\n"))
		} else if n, ok := strings.CutPrefix(line, "# not: "); ok {
			notWant = append(notWant, strings.ReplaceAll(n, `\n`, "\n"))
		} else {
			break
		}
	}
	if len(want) == 0 {
		t.Fatalf("%s: first line must be '# error: <text>'", path)
	}
	return want, notWant
}

func TestFullConfigFile(t *testing.T) {
	cfg, err := Load("../testdata/config/full.good.toml", joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig
	want.Node, want.Cluster, want.Listen, want.Advertise = "host-1", "prod", "127.0.0.1:9500", "host-1.example:9500"
	want.DataDir, want.TTL, want.LogLevel, want.LogFormat = "/srv/agent", 3*time.Second, "debug", "json"
	want.Labels = map[string]string{"rack": "r1"}
	want.Etcd.Endpoints = []string{"http://127.0.0.1:2379", "http://127.0.0.2:2379"}
	want.Etcd.Prefix, want.Etcd.DialTimeout = "/obs", 2*time.Second
	if !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("got  %+v\nwant %+v", *cfg, want)
	}
}

// flag > environment > file > default, key by key.
func TestPrecedence(t *testing.T) {
	t.Setenv("AGENT_CLUSTER", "from-env")
	t.Setenv("AGENT_TTL", "7s")
	t.Setenv("AGENT_ETCD", "http://127.0.0.9:2379,http://127.0.0.8:2379")
	t.Setenv("AGENT_LOG_FORMAT", "json")
	cfg, err := Load("../testdata/config/full.good.toml", joinFlags(t, "--cluster", "from-flag", "--etcd", "http://127.0.0.7:2379"), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	for key, pair := range map[string][2]any{
		"cluster (flag over env and file)": {cfg.Cluster, "from-flag"},
		"ttl (env over file)":              {cfg.TTL, 7 * time.Second},
		"etcd.endpoints (flag over env)":   {cfg.Etcd.Endpoints, []string{"http://127.0.0.7:2379"}},
		"log_format (env over file)":       {cfg.LogFormat, "json"},
		"listen (file over default)":       {cfg.Listen, "127.0.0.1:9500"},
		"etcd.embedded_listen (default)":   {cfg.Etcd.EmbeddedListen, DefaultConfig.Etcd.EmbeddedListen},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s: got %v, want %v", key, pair[0], pair[1])
		}
	}
}

func TestBadEnvAndFlag(t *testing.T) {
	t.Setenv("AGENT_LOG_LEVEL", "chatty")
	_, err := Load("", joinFlags(t, "--node", "n1"), JoinOptions)
	if err == nil || !strings.Contains(err.Error(), `log_level: must be one of debug, info, warn, error, got "chatty"`) {
		t.Fatalf("bad env value: %v", err)
	}
	t.Setenv("AGENT_LOG_LEVEL", "")
	_, err = Load("", joinFlags(t, "--node", "n1", "--ttl", "0s"), JoinOptions)
	if err == nil || !strings.Contains(err.Error(), "ttl: must be a whole number of seconds, at least 1s") {
		t.Fatalf("bad flag value: %v", err)
	}
}

func TestDefaultsNeedOnlyANodeName(t *testing.T) {
	cfg, err := Load("", joinFlags(t), JoinOptions)
	if err != nil {
		t.Skipf("this host's name is not a valid node name: %v", err)
	}
	if cfg.Node == "" || !cfg.Embedded() || cfg.TTL != 5*time.Second || cfg.Etcd.EmbeddedListen != "http://127.0.0.1:2379" {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestChanged(t *testing.T) {
	a, b := DefaultConfig, DefaultConfig
	b.LogLevel = "debug"
	b.Etcd.Endpoints = []string{"http://127.0.0.1:1"}
	if got := Changed(&a, &b); !reflect.DeepEqual(got, []string{"log_level", "etcd.endpoints"}) {
		t.Fatalf("Changed = %v", got)
	}
}

func TestAdvertiseAddr(t *testing.T) {
	c := Config{Listen: "127.0.0.1:9464"}
	if got := c.AdvertiseAddr(); got != "127.0.0.1:9464" {
		t.Fatalf("AdvertiseAddr = %q", got)
	}
	c = Config{Listen: "0.0.0.0:9464"}
	if got := c.AdvertiseAddr(); strings.HasPrefix(got, "0.0.0.0") || !strings.HasSuffix(got, ":9464") {
		t.Fatalf("AdvertiseAddr of a wildcard listen = %q", got)
	}
}

// The example config shipped in deploy/ must load as it is.
func TestDeployExampleConfig(t *testing.T) {
	cfg, err := Load("../deploy/agent.toml", joinFlags(t, "--node", "host-1"), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Embedded() || cfg.TTL != 5*time.Second || cfg.DataDir != "/var/lib/agent" {
		t.Fatalf("deploy/agent.toml: %+v", cfg)
	}
}

func TestExportersConfig(t *testing.T) {
	cfg, err := Load("../testdata/config/exporters.good.toml", joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := []Exporter{
		{Job: "node", Address: "127.0.0.1:9100"},
		{Job: "app", Addresses: []string{"127.0.0.1:8080", "127.0.0.1:8081"}, MetricsPath: "/internal/metrics", Scheme: "https",
			Labels: map[string]string{"rack": "r1", "team": "a b"}},
	}
	if !reflect.DeepEqual(cfg.Exporters, want) {
		t.Fatalf("exporters:\n got %+v\nwant %+v", cfg.Exporters, want)
	}
	if got := cfg.SDPath(); got != "/var/lib/agent/sd" {
		t.Fatalf("SDPath = %q", got)
	}
}

func TestEmbeddedEtcdTLS(t *testing.T) {
	cfg, err := Load("../testdata/config/etcd-embedded-tls.good.toml", joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Etcd.EmbeddedTLS() {
		t.Error("EmbeddedTLS() = false with embedded_cert_file set")
	}
	if cert, key := cfg.Etcd.ClientCert(); cert != "/dev/null" || key != "/dev/null" {
		t.Errorf("client certificate = %q, %q; want the member's", cert, key)
	}
	cfg, err = Load("../testdata/config/etcd-embedded-tls.good.toml", joinFlags(t, "--etcd-cert-file", "/dev/zero", "--etcd-key-file", "/dev/zero"), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	if cert, key := cfg.Etcd.ClientCert(); cert != "/dev/zero" || key != "/dev/zero" {
		t.Errorf("client certificate = %q, %q; want --etcd-cert-file's", cert, key)
	}
	cfg, err = Load("../testdata/config/etcd-embedded-insecure.good.toml", joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatalf("etcd.embedded_insecure: %v", err)
	}
	if cfg.Etcd.EmbeddedTLS() {
		t.Error("EmbeddedTLS() = true without a certificate")
	}
}
