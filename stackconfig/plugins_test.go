package stackconfig

import (
	"reflect"
	"testing"
	"time"
)

func TestPluginsConfigFile(t *testing.T) {
	cfg, err := Load("../testdata/config/plugins.good.toml", joinFlags(t), JoinOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := []Plugin{
		{
			Name: "disk", Command: []string{"/usr/lib/agent/plugins/disk.sh", "-v"}, Interval: time.Minute,
			Timeout: 5 * time.Second, User: "nobody", Env: []string{"LANG=C", "DISK_PATHS=/,/var"}, NS: "infra",
		},
		{Name: "check_dns", Git: "file:///srv/git/check_dns.git", DisableMax: 2 * time.Hour},
	}
	if !reflect.DeepEqual(cfg.Plugins, want) {
		t.Fatalf("plugins:\n got %+v\nwant %+v", cfg.Plugins, want)
	}
	if cfg.Push.MaxBodyBytes != 1<<20 || cfg.PluginsPath() != "/srv/agent/plugins" {
		t.Fatalf("push %+v, plugins path %q", cfg.Push, cfg.PluginsPath())
	}
	got := cfg.Plugins[1].WithDefaults()
	if got.Timeout != 10*time.Second || got.NS != "plugins" || got.DisableMax != 2*time.Hour || got.Interval != 0 {
		t.Fatalf("defaults of check_dns: %+v", got)
	}
	// Environment variable names keep their case (a TOML map would not:
	// the loader folds map keys to lower case).
	if cfg.Plugins[0].Env[0] != "LANG=C" {
		t.Fatalf("env = %q", cfg.Plugins[0].Env)
	}
}

func TestPluginNameAndNamespaceRules(t *testing.T) {
	for s, ok := range map[string]bool{
		"disk": true, "check_dns2": true, "a": true, "Disk": false, "2disk": false, "disk-usage": false,
		"": false, "../x": false, "a/b": false, "disk usage": false,
	} {
		if ValidPluginName(s) != ok {
			t.Errorf("ValidPluginName(%q) = %t", s, !ok)
		}
	}
	for s, ok := range map[string]bool{
		"team-a": true, "Team_A.prod": true, "0": true, "": false, "-a": false, ".a": false,
		"a b": false, "a/b": false, "ü": false, "a\n": false,
	} {
		if ValidNamespace(s) != ok {
			t.Errorf("ValidNamespace(%q) = %t", s, !ok)
		}
	}
}
