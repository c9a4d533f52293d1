package plugins

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/agentproj/agent/drivers/workload"
)

// stateFile, in Config.Dir, holds which plugins are disabled until when,
// so that a restart of the agent keeps them disabled. It cannot be a
// plugin's clone: plugin names have no dot.
const stateFile = "disabled.json"

type savedState struct {
	Disabled map[string]time.Time `json:"disabled"`
}

// loadDisabled disables the plugins the state file names: those still
// configured, until the time saved but no longer than their disable_max
// from now. No file is no state; a malformed one is logged and ignored.
func (m *Manager) loadDisabled(now time.Time) {
	path := filepath.Join(m.cfg.Dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var st savedState
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		m.log.Warn("plugins: state file ignored, every plugin is enabled", "file", path, "err", err)
		return
	}
	for name, until := range st.Disabled {
		p, ok := m.plugins[name]
		if !ok || !until.After(now) {
			continue
		}
		if limit := now.Add(p.cfg.DisableMax); until.After(limit) {
			until = limit
		}
		p.disabledUntil = until
		m.log.Info("plugin disabled, as before the restart", "plugin", name, "until", until.Format(time.RFC3339))
	}
}

// saveDisabled writes which plugins are disabled until when. A failure is
// logged: the plugins are disabled or enabled as asked, until a restart.
func (m *Manager) saveDisabled() {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	st := savedState{Disabled: map[string]time.Time{}}
	for name, p := range m.plugins {
		p.mu.Lock()
		if !p.disabledUntil.IsZero() {
			st.Disabled[name] = p.disabledUntil.UTC()
		}
		p.mu.Unlock()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		_, err = workload.WriteFile(filepath.Join(m.cfg.Dir, stateFile), b)
	}
	if err != nil {
		m.log.Error("plugins: cannot save which plugins are disabled; a restart enables them", "err", err)
	}
}
