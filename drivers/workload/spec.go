package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Restart is a restart policy the runtime applies by itself, even while the
// agent is down (Docker's restart policy). Whatever it says, a Supervisor
// starts a desired workload again when it finds it stopped.
type Restart string

// Restart policies.
const (
	RestartAlways    Restart = "always"
	RestartOnFailure Restart = "on-failure"
	RestartNo        Restart = "no"
)

// DefaultRestart applies when Spec.Restart is empty.
const DefaultRestart = RestartAlways

// DefaultStopTimeout applies when Spec.StopTimeout is zero: how long a
// graceful stop (SIGTERM) may take before the workload is killed.
const DefaultStopTimeout = 10 * time.Second

// Spec is what should run. Host networking is always on: there is no bridge
// on the hosts the agent serves. Which fields a driver ignores is written in
// its package doc (process ignores Image, Hostname, Mounts, Resources and
// Restart; docker ignores Binary; none ignores everything).
type Spec struct {
	// Name is a DNS label; it becomes the container name (docker) or the
	// file names (process).
	Name string `json:"name"`
	// Image is the container image (docker).
	Image string `json:"image,omitempty"`
	// Binary is the path of the executable (process).
	Binary string `json:"binary,omitempty"`
	// Args are passed to the image's entrypoint or to Binary.
	Args []string `json:"args,omitempty"`
	// Env is the whole environment of the workload.
	Env map[string]string `json:"env,omitempty"`
	// Labels are the caller's labels (LabelNode, LabelRole, ...). Values of
	// LabelManaged and LabelSpecHash here are ignored: drivers set them.
	Labels map[string]string `json:"labels,omitempty"`
	// Hostname is the container's hostname; empty keeps the runtime's.
	Hostname string `json:"hostname,omitempty"`
	// Mounts are bind mounts.
	Mounts []Mount `json:"mounts,omitempty"`
	// Restart is the runtime's own restart policy; empty means DefaultRestart.
	Restart Restart `json:"restart,omitempty"`
	// Resources are limits; zero means no limit.
	Resources Resources `json:"resources,omitzero"`
	// StopTimeout is the grace period of a stop; zero means DefaultStopTimeout.
	StopTimeout time.Duration `json:"stop_timeout,omitempty"`
	// Ready is the workload's readiness probe: an http:// URL that answers
	// 2xx once it has finished starting (Prometheus' /-/ready, otelcol's
	// health check). A reload waits for it (Supervisor.Reload). It does
	// not shape the workload: Hash leaves it out, and drivers ignore it.
	Ready string `json:"ready,omitempty"`
}

// Mount is a bind mount of a host path.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Resources are limits; zero means unlimited.
type Resources struct {
	NanoCPUs    int64 `json:"nano_cpus,omitempty"`
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// hostnameRE is RFC 1123: dot-separated labels, each 1..63 characters.
var hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$`)

// Validate checks what every driver needs; a driver checks its own field
// (Image, Binary) in Ensure. Errors name the field and the bad value.
func (s Spec) Validate() error {
	if !dnsLabel.MatchString(s.Name) {
		return fmt.Errorf("workload name: must be a DNS label (lower-case letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit), got %q", s.Name)
	}
	fail := func(field, format string, args ...any) error {
		return fmt.Errorf("workload %q: %s: %s", s.Name, field, fmt.Sprintf(format, args...))
	}
	for i, a := range s.Args {
		if strings.ContainsRune(a, 0) {
			return fail(fmt.Sprintf("args[%d]", i), "must not contain NUL, got %q", a)
		}
	}
	for k, v := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fail("env", "key must be non-empty without '=' or NUL, got %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return fail("env."+k, "must not contain NUL, got %q", v)
		}
	}
	for k := range s.Labels {
		if k == "" {
			return fail("labels", "key must be non-empty, got %q", k)
		}
	}
	if s.Hostname != "" && (len(s.Hostname) > 253 || !hostnameRE.MatchString(s.Hostname)) {
		return fail("hostname", "must be an RFC 1123 host name, got %q", s.Hostname)
	}
	targets := map[string]bool{}
	for i, m := range s.Mounts {
		field := fmt.Sprintf("mounts[%d]", i)
		if !path.IsAbs(m.Source) {
			return fail(field+".source", "must be an absolute path, got %q", m.Source)
		}
		if !path.IsAbs(m.Target) {
			return fail(field+".target", "must be an absolute path, got %q", m.Target)
		}
		t := path.Clean(m.Target)
		if targets[t] {
			return fail(field+".target", "mounted twice, got %q", m.Target)
		}
		targets[t] = true
	}
	switch s.Restart {
	case "", RestartAlways, RestartOnFailure, RestartNo:
	default:
		return fail("restart", "must be one of always, on-failure, no, got %q", s.Restart)
	}
	if s.Resources.NanoCPUs < 0 {
		return fail("resources.nano_cpus", "must be >= 0, got %d", s.Resources.NanoCPUs)
	}
	if s.Resources.MemoryBytes < 0 {
		return fail("resources.memory_bytes", "must be >= 0, got %d", s.Resources.MemoryBytes)
	}
	if s.StopTimeout < 0 {
		return fail("stop_timeout", "must be >= 0, got %s", s.StopTimeout)
	}
	if s.Ready != "" {
		if u, err := url.Parse(s.Ready); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fail("ready", "must be an http:// or https:// URL, got %q", s.Ready)
		}
	}
	return nil
}

// RestartPolicy is Restart with the default applied.
func (s Spec) RestartPolicy() Restart {
	if s.Restart == "" {
		return DefaultRestart
	}
	return s.Restart
}

// StopGrace is StopTimeout with the default applied.
func (s Spec) StopGrace() time.Duration {
	if s.StopTimeout == 0 {
		return DefaultStopTimeout
	}
	return s.StopTimeout
}

// hashVersion changes when the hashed form changes, so that an agent upgrade
// that changes it replaces workloads once, on purpose.
const hashVersion = "v1"

// Hash is a stable digest of everything that shapes the workload: two specs
// with the same Hash make the same workload. Defaults are applied first (an
// empty Restart hashes like "always"), map order and the driver-owned labels
// do not count, nil and empty slices and maps are the same.
func (s Spec) Hash() string {
	n := s
	n.Ready = ""
	n.Restart = s.RestartPolicy()
	n.StopTimeout = s.StopGrace()
	if len(n.Args) == 0 {
		n.Args = nil
	}
	if len(n.Env) == 0 {
		n.Env = nil
	}
	if len(n.Mounts) == 0 {
		n.Mounts = nil
	}
	n.Labels = nil
	for k, v := range s.Labels {
		if k == LabelManaged || k == LabelSpecHash {
			continue
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[k] = v
	}
	// encoding/json writes map keys sorted, so the encoding is canonical.
	b, err := json.Marshal(struct {
		V string `json:"v"`
		Spec
	}{hashVersion, n})
	if err != nil {
		panic(fmt.Sprintf("workload: hash spec: %v", err)) // cannot happen: plain strings and numbers
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Clone returns a deep copy of s.
func (s Spec) Clone() Spec {
	c := s
	c.Args = slices.Clone(s.Args)
	c.Mounts = slices.Clone(s.Mounts)
	c.Env = maps.Clone(s.Env)
	c.Labels = maps.Clone(s.Labels)
	return c
}
