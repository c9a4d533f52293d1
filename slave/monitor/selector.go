package monitor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/agentproj/agent/stackconfig"
)

// selectorKind is how a group finds its processes.
type selectorKind int

const (
	byPID selectorKind = iota
	byPIDFile
	byMonitorFile
	byComm
	byCmdline
	byUnit
)

// group is one [[monitor.processes]] entry as the refresh loop uses it.
type group struct {
	cfg      stackconfig.MonitorProcess // what it was made from
	name     string
	guid     string
	kind     selectorKind
	children bool

	pid     int            // byPID
	path    string         // byPIDFile, byMonitorFile
	comm    string         // byComm
	cmdline *regexp.Regexp // byCmdline
	unit    string         // byUnit

	file watchedFile // byPIDFile, byMonitorFile

	// Labels from the monitor file.
	service, ip string

	acc counters // what its processes used while they were in it
}

func newGroups(cfg []stackconfig.MonitorProcess) ([]*group, error) {
	groups := make([]*group, 0, len(cfg))
	for i, p := range cfg {
		g := &group{cfg: p, name: p.Name, guid: p.GUID, children: p.WithChildren()}
		switch {
		case p.PID != 0:
			g.kind, g.pid = byPID, p.PID
		case p.PIDFile != "":
			g.kind, g.path = byPIDFile, p.PIDFile
		case p.MonitorFile != "":
			g.kind, g.path = byMonitorFile, p.MonitorFile
		case p.Comm != "":
			g.kind, g.comm = byComm, p.Comm
		case p.Cmdline != "":
			re, err := regexp.Compile(p.Cmdline)
			if err != nil {
				return nil, fmt.Errorf("monitor.processes[%d].cmdline: invalid regular expression %q: %w", i, p.Cmdline, err)
			}
			g.kind, g.cmdline = byCmdline, re
		case p.SystemdUnit != "":
			g.kind, g.unit = byUnit, p.UnitName()
		default:
			return nil, fmt.Errorf("monitor.processes[%d]: no selector", i)
		}
		groups = append(groups, g)
	}
	return groups, nil
}

// watchedFile is a pidfile or monitor file, re-read only when it changes
// (size, modification time or inode), keeping the last good value when a
// new content is bad.
type watchedFile struct {
	size  int64
	mtime time.Time
	ino   uint64
	read  bool // read at least once since it appeared

	pid         int    // last good value
	service, ip string // monitor file only
	problem     string // what is wrong now, logged once per change
}

// monitorFile is what an application writes.
type monitorFile struct {
	PID         *int   `json:"pid"`
	ServiceName string `json:"serviceName"`
	IP          string `json:"ip"`
}

// refresh re-reads the file at path if it changed and reports the pid it
// names now (0: none) and a problem to log, "" when there is none or it was
// reported already.
func (w *watchedFile) refresh(path string, json bool) (pid int, problem string) {
	fi, err := os.Stat(path)
	if err != nil {
		w.read, w.pid = false, 0
		msg := "cannot be read: " + errText(err)
		if errors.Is(err, os.ErrNotExist) {
			msg = "does not exist (yet)"
		}
		return 0, w.report(msg)
	}
	if fi.IsDir() {
		w.read, w.pid = false, 0
		return 0, w.report("is a directory, not a file")
	}
	ino := inode(fi)
	if w.read && fi.Size() == w.size && fi.ModTime().Equal(w.mtime) && ino == w.ino {
		return w.pid, ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return w.pid, w.report("cannot be read: " + errText(err))
	}
	w.read, w.size, w.mtime, w.ino = true, fi.Size(), fi.ModTime(), ino
	if json {
		err = w.parseMonitorFile(b)
	} else {
		err = w.parsePIDFile(b)
	}
	if err != nil {
		// The last good value stays: an application rewriting its file
		// may be caught half-way.
		return w.pid, w.report(err.Error())
	}
	w.problem = ""
	return w.pid, ""
}

// report returns msg the first time it is the problem, "" after.
func (w *watchedFile) report(msg string) string {
	if w.problem == msg {
		return ""
	}
	w.problem = msg
	return msg
}

func (w *watchedFile) parsePIDFile(b []byte) error {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	s := strings.TrimSpace(string(line))
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return fmt.Errorf("want a process id on its first line, got %q", truncate(s, 40))
	}
	w.pid = pid
	return nil
}

func (w *watchedFile) parseMonitorFile(b []byte) error {
	var m monitorFile
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("bad JSON, want {\"pid\": 1111, \"serviceName\": \"svc\", \"ip\": \"10.0.0.1\"}: %w", err)
	}
	if m.PID == nil || *m.PID <= 0 {
		return errors.New(`"pid": want a process id > 0`)
	}
	w.pid, w.service, w.ip = *m.PID, m.ServiceName, m.IP
	return nil
}

func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
