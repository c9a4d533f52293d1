package stackconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Monitor configures the node monitor: the processes, services and
// containers the agent measures itself and serves at /metrics/monitor.
type Monitor struct {
	// Enabled runs the monitor and publishes it as a target of job
	// agent-monitor.
	Enabled bool `mapstructure:"enabled"`
	// Interval is how often /proc and the cgroups are read; a scrape only
	// renders the last reading.
	Interval time.Duration `mapstructure:"interval"`
	// Containers measures every container of the host's Docker engine
	// (DOCKER_HOST or /var/run/docker.sock).
	Containers bool `mapstructure:"containers"`
	// Pods measures, in Kubernetes mode, every pod of this node from the
	// kubepods cgroup tree, named through a watch of the node's pods
	// (docs/monitor.md); elsewhere it has no effect.
	Pods bool `mapstructure:"pods"`
	// MaxProcesses bounds the processes measured per reading, MaxSeries the
	// series served (pods apart); what is left out is counted in
	// agent_monitor_dropped_total.
	MaxProcesses int `mapstructure:"max_processes"`
	MaxSeries    int `mapstructure:"max_series"`
	// ProcRoot and CgroupRoot are where /proc and /sys/fs/cgroup of the
	// host are mounted (an agent in a container sees them elsewhere).
	ProcRoot   string `mapstructure:"proc_root"`
	CgroupRoot string `mapstructure:"cgroup_root"`
	// Processes are the process groups to measure.
	Processes []MonitorProcess `mapstructure:"processes"`
}

// MonitorProcess is one [[monitor.processes]] entry: a group named Name
// made of the processes one selector picks, and their children.
type MonitorProcess struct {
	// Name is the group; it becomes the label group.
	Name string `mapstructure:"name"`
	// Exactly one selector.
	PID         int    `mapstructure:"pid"`
	PIDFile     string `mapstructure:"pidfile"`
	SystemdUnit string `mapstructure:"systemd_unit"`
	Comm        string `mapstructure:"comm"`
	Cmdline     string `mapstructure:"cmdline"`
	MonitorFile string `mapstructure:"monitor_file"`
	// Children counts the descendants of a selected process in the group
	// unless false (nil means true).
	Children *bool `mapstructure:"children"`
	// GUID labels the group's series with the manager's guid, for an
	// application that runs outside a container.
	GUID string `mapstructure:"guid"`
}

// DefaultMonitor holds the value of every monitor key that is not set.
var DefaultMonitor = Monitor{
	Enabled:      true,
	Interval:     10 * time.Second,
	Containers:   true,
	Pods:         true,
	MaxProcesses: 5000,
	MaxSeries:    50000,
	ProcRoot:     "/proc",
	CgroupRoot:   "/sys/fs/cgroup",
}

// WithChildren reports whether descendants count in the group.
func (p MonitorProcess) WithChildren() bool { return p.Children == nil || *p.Children }

// Selector names the entry's selector key and its value as written.
func (p MonitorProcess) Selector() (key, value string) {
	set := p.selectors()
	if len(set) != 1 {
		return "", ""
	}
	return set[0][0], set[0][1]
}

func (p MonitorProcess) selectors() [][2]string {
	var out [][2]string
	if p.PID != 0 {
		out = append(out, [2]string{"pid", fmt.Sprint(p.PID)})
	}
	for _, s := range [][2]string{
		{"pidfile", p.PIDFile}, {"systemd_unit", p.SystemdUnit}, {"comm", p.Comm},
		{"cmdline", p.Cmdline}, {"monitor_file", p.MonitorFile},
	} {
		if s[1] != "" {
			out = append(out, s)
		}
	}
	return out
}

// UnitName is SystemdUnit with ".service" added when it has no unit suffix.
func (p MonitorProcess) UnitName() string {
	u := p.SystemdUnit
	if u == "" || strings.Contains(u, ".") {
		return u
	}
	return u + ".service"
}

// systemdUnit is a unit name as systemd allows it (unit name characters,
// an optional @instance and a type suffix).
var systemdUnit = regexp.MustCompile(`^[a-zA-Z0-9:_.\\@-]{1,255}$`)

// Validate checks every monitor key; errors name the key and the value.
func (m Monitor) Validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("monitor."+format, args...)) }
	if m.Interval < time.Second {
		bad("interval: must be at least 1s, got %s", m.Interval)
	}
	if m.MaxProcesses < 1 {
		bad("max_processes: must be > 0, got %d", m.MaxProcesses)
	}
	if m.MaxSeries < 1 {
		bad("max_series: must be > 0, got %d", m.MaxSeries)
	}
	for _, d := range []struct{ key, path string }{{"proc_root", m.ProcRoot}, {"cgroup_root", m.CgroupRoot}} {
		if !filepath.IsAbs(d.path) {
			bad("%s: must be an absolute path, got %q", d.key, d.path)
		}
	}
	names := map[string]int{}
	for i, p := range m.Processes {
		entry := fmt.Sprintf("processes[%d]", i)
		switch {
		case p.Name == "":
			bad("%s.name: must be set (it becomes the label group)", entry)
		case !utf8.ValidString(p.Name) || strings.ContainsAny(p.Name, "\x00\r\n"):
			bad("%s.name: must be UTF-8 on one line, got %q", entry, p.Name)
		default:
			if j, dup := names[p.Name]; dup {
				bad("%s.name: %q is already the name of processes[%d]", entry, p.Name, j)
			}
			names[p.Name] = i
		}
		if p.GUID != "" && !ValidDNSLabel(p.GUID) {
			bad("%s.guid: must be %s, got %q", entry, DNSLabelRule, p.GUID)
		}
		set := p.selectors()
		if len(set) == 0 {
			bad("%s: set one of pid, pidfile, systemd_unit, comm, cmdline, monitor_file", entry)
			continue
		}
		if len(set) > 1 {
			var got []string
			for _, s := range set {
				got = append(got, fmt.Sprintf("%s = %q", s[0], s[1]))
			}
			bad("%s: set only one of pid, pidfile, systemd_unit, comm, cmdline, monitor_file, got %s", entry, strings.Join(got, " and "))
			continue
		}
		switch {
		case p.PID < 0:
			bad("%s.pid: must be a process id > 0, got %d", entry, p.PID)
		case p.PIDFile != "":
			if err := checkWatchedFile(p.PIDFile); err != nil {
				bad("%s.pidfile: %v, got %q", entry, err, p.PIDFile)
			}
		case p.MonitorFile != "":
			if err := checkWatchedFile(p.MonitorFile); err != nil {
				bad("%s.monitor_file: %v, got %q", entry, err, p.MonitorFile)
			}
		case p.SystemdUnit != "":
			if !systemdUnit.MatchString(p.SystemdUnit) || strings.HasPrefix(p.SystemdUnit, "-") {
				bad("%s.systemd_unit: must be a unit name such as \"nginx.service\" or \"nginx\", got %q", entry, p.SystemdUnit)
			}
		case p.Comm != "":
			// The kernel keeps 15 bytes of a process name (TASK_COMM_LEN).
			if len(p.Comm) > 15 || strings.ContainsAny(p.Comm, "/\x00\n") {
				bad("%s.comm: must be a process name as in /proc/<pid>/comm, at most 15 bytes without '/', got %q", entry, p.Comm)
			}
		case p.Cmdline != "":
			if _, err := regexp.Compile(p.Cmdline); err != nil {
				bad("%s.cmdline: invalid regular expression %q: %v", entry, p.Cmdline, unwrapRegexp(err))
			}
		}
	}
	return errs
}

// checkWatchedFile accepts an absolute path of a file that may not exist
// yet (the program writes it when it starts), but refuses a directory.
func checkWatchedFile(path string) error {
	if !filepath.IsAbs(path) {
		return errors.New("must be an absolute path")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory, not a file")
	}
	return nil
}

// unwrapRegexp drops the "error parsing regexp: " prefix that repeats what
// the message already says.
func unwrapRegexp(err error) string {
	return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
}
