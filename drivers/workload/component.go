package workload

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// SamePath mounts a host path at the same path inside a container, so that
// the args of a component are the same for every driver.
func SamePath(path string, readOnly bool) Mount {
	return Mount{Source: path, Target: path, ReadOnly: readOnly}
}

// Component is one piece of a stack as its config section describes it:
// an image for the docker driver, a local binary for the process driver.
type Component struct {
	Key    string // config key for messages: "stack.prometheus"
	Role   string // a Role constant
	Image  string
	Binary string
}

// Spec returns the workload spec of c for the named driver, or an error
// that says which key to set. The docker driver gets mounts; the others run
// on the host, where the paths already are.
func (c Component) Spec(driver, name string, args []string, mounts ...Mount) (Spec, error) {
	s := Spec{Name: name, Hostname: name, Args: args, Labels: map[string]string{LabelRole: c.Role}}
	switch driver {
	case "docker":
		if c.Image == "" {
			return Spec{}, fmt.Errorf("%s.image: not set; the docker driver runs images", c.Key)
		}
		s.Image = c.Image
		s.Mounts = mounts
	case "process":
		if c.Binary == "" {
			return Spec{}, fmt.Errorf("%s.binary: not set; the process driver runs local binaries", c.Key)
		}
		if _, err := os.Stat(c.Binary); err != nil {
			return Spec{}, fmt.Errorf("%s.binary: %w", c.Key, err)
		}
		s.Binary = c.Binary
	default: // none: the spec is only recorded
		s.Image, s.Binary = c.Image, c.Binary
	}
	return s, nil
}

// WriteFile replaces path with content when it differs, atomically (a
// temporary file renamed over it), and reports whether it changed.
func WriteFile(path string, content []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}
