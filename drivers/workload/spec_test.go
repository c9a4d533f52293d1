package workload

import (
	"strings"
	"testing"
	"time"
)

func validSpec() Spec {
	return Spec{
		Name:        "prometheus",
		Image:       "prom/prometheus:v2.42.0",
		Binary:      "/usr/bin/prometheus",
		Args:        []string{"--config.file=/etc/prometheus/prometheus.yml"},
		Env:         map[string]string{"A": "1", "B": "2"},
		Labels:      map[string]string{LabelRole: RolePrometheus, LabelNode: "n1"},
		Hostname:    "n1",
		Mounts:      []Mount{{Source: "/srv/prom", Target: "/prometheus"}},
		Restart:     RestartAlways,
		Resources:   Resources{NanoCPUs: 1e9, MemoryBytes: 1 << 30},
		StopTimeout: 5 * time.Second,
	}
}

func TestValidateNamesFieldAndValue(t *testing.T) {
	if err := validSpec().Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for _, tc := range []struct {
		edit func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Name = "" }, `workload name: must be a DNS label`},
		{func(s *Spec) { s.Name = "Prometheus" }, `got "Prometheus"`},
		{func(s *Spec) { s.Name = "-x" }, `got "-x"`},
		{func(s *Spec) { s.Name = strings.Repeat("a", 64) }, `must be a DNS label`},
		{func(s *Spec) { s.Args = []string{"a", "b\x00"} }, `workload "prometheus": args[1]: must not contain NUL`},
		{func(s *Spec) { s.Env = map[string]string{"A=B": "1"} }, `env: key must be non-empty without '=' or NUL, got "A=B"`},
		{func(s *Spec) { s.Labels = map[string]string{"": "x"} }, `labels: key must be non-empty`},
		{func(s *Spec) { s.Hostname = "bad_host" }, `hostname: must be an RFC 1123 host name, got "bad_host"`},
		{func(s *Spec) { s.Mounts = []Mount{{Source: "rel", Target: "/x"}} }, `mounts[0].source: must be an absolute path, got "rel"`},
		{func(s *Spec) { s.Mounts = []Mount{{Source: "/a", Target: "x"}} }, `mounts[0].target: must be an absolute path, got "x"`},
		{func(s *Spec) { s.Mounts = []Mount{{Source: "/a", Target: "/x"}, {Source: "/b", Target: "/x/"}} }, `mounts[1].target: mounted twice, got "/x/"`},
		{func(s *Spec) { s.Restart = "sometimes" }, `restart: must be one of always, on-failure, no, got "sometimes"`},
		{func(s *Spec) { s.Resources.NanoCPUs = -1 }, `resources.nano_cpus: must be >= 0, got -1`},
		{func(s *Spec) { s.Resources.MemoryBytes = -5 }, `resources.memory_bytes: must be >= 0, got -5`},
		{func(s *Spec) { s.StopTimeout = -time.Second }, `stop_timeout: must be >= 0, got -1s`},
		{func(s *Spec) { s.Ready = "127.0.0.1:13133/status" }, `ready: must be an http:// or https:// URL, got "127.0.0.1:13133/status"`},
	} {
		s := validSpec()
		tc.edit(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v; want an error containing %q", err, tc.want)
		}
	}
}

func TestHashIsStable(t *testing.T) {
	// Pinned: a change here replaces every workload of every agent on
	// upgrade. Change hashVersion with it, on purpose.
	const want = "1ed31baabb805a37e2f2e58783f9ab8d"
	for range 20 { // maps iterate in a new order each time
		if got := validSpec().Hash(); got != want {
			t.Fatalf("Hash() = %s; pinned %s", got, want)
		}
	}
}

func TestHashSeesEveryFieldAndOnlyThose(t *testing.T) {
	base := validSpec().Hash()
	for name, edit := range map[string]func(*Spec){
		"name":         func(s *Spec) { s.Name = "other" },
		"image":        func(s *Spec) { s.Image = "prom/prometheus:v2.43.0" },
		"binary":       func(s *Spec) { s.Binary = "/opt/prometheus" },
		"args":         func(s *Spec) { s.Args = append(s.Args, "--web.enable-lifecycle") },
		"args order":   func(s *Spec) { s.Args = []string{"b", "a"} },
		"env":          func(s *Spec) { s.Env["B"] = "3" },
		"label":        func(s *Spec) { s.Labels[LabelGUID] = "g1" },
		"hostname":     func(s *Spec) { s.Hostname = "n2" },
		"mount":        func(s *Spec) { s.Mounts[0].ReadOnly = true },
		"restart":      func(s *Spec) { s.Restart = RestartNo },
		"cpus":         func(s *Spec) { s.Resources.NanoCPUs = 2e9 },
		"memory":       func(s *Spec) { s.Resources.MemoryBytes = 1 },
		"stop timeout": func(s *Spec) { s.StopTimeout = time.Second },
	} {
		s := validSpec().Clone()
		edit(&s)
		if s.Hash() == base {
			t.Errorf("changing %s does not change the hash", name)
		}
	}
	for name, edit := range map[string]func(*Spec){
		"driver labels": func(s *Spec) { s.Labels[LabelManaged] = "true"; s.Labels[LabelSpecHash] = "abc" },
		"map rebuilt":   func(s *Spec) { s.Env = map[string]string{"B": "2", "A": "1"} },
		"ready probe":   func(s *Spec) { s.Ready = "http://127.0.0.1:9090/-/ready" }, // no restart for it
	} {
		s := validSpec().Clone()
		edit(&s)
		if s.Hash() != base {
			t.Errorf("%s changes the hash", name)
		}
	}
	a := Spec{Name: "x"}
	b := Spec{Name: "x", Restart: RestartAlways, StopTimeout: DefaultStopTimeout, Args: []string{}, Env: map[string]string{}, Labels: map[string]string{LabelManaged: "true"}}
	if a.Hash() != b.Hash() {
		t.Error("defaults and empty collections change the hash")
	}
}

func TestCloneIsDeep(t *testing.T) {
	s := validSpec()
	c := s.Clone()
	c.Args[0], c.Env["A"], c.Labels[LabelNode], c.Mounts[0].Target = "x", "x", "x", "/x"
	if s.Hash() != validSpec().Hash() {
		t.Fatal("editing a clone changed the original")
	}
}

func TestMatches(t *testing.T) {
	labels := map[string]string{LabelOwner: "node-stack", LabelNode: "n1"}
	if !Matches(labels, nil) || !Matches(labels, map[string]string{LabelNode: "n1"}) {
		t.Error("want match")
	}
	if Matches(labels, map[string]string{LabelNode: "n2"}) || Matches(labels, map[string]string{LabelGUID: ""}) {
		t.Error("want no match")
	}
}
