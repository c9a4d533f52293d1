package plugins

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
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
		err = writeFileSynced(m.cfg.Dir, stateFile, b)
	}
	if err != nil {
		m.log.Error("plugins: cannot save which plugins are disabled; a restart enables them", "err", err)
	}
}

// writeFileSynced replaces dir/name with b: a temporary file in dir,
// fsync'd, renamed over it, so a crash leaves the old file or the new one.
func writeFileSynced(dir, name string, b []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}
