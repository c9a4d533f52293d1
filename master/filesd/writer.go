package filesd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrStaleLeader means the directory was last written under a newer leader
// revision than the caller's.
var ErrStaleLeader = errors.New("filesd: a newer master has written this directory")

const revisionFile = ".leader-revision"

// Writer writes file_sd files into one directory.
type Writer struct {
	dir  string
	last map[string][]byte // job -> bytes last written or found on disk
}

// NewWriter creates dir if needed.
func NewWriter(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("file_sd dir: %w", err)
	}
	return &Writer{dir: dir, last: map[string][]byte{}}, nil
}

// Dir is the directory written.
func (w *Writer) Dir() string { return w.dir }

// Jobs lists the jobs that have a file in the directory.
func (w *Writer) Jobs() ([]string, error) {
	names, err := filepath.Glob(filepath.Join(w.dir, "*.json"))
	if err != nil {
		return nil, err
	}
	jobs := make([]string, 0, len(names))
	for _, n := range names {
		jobs = append(jobs, strings.TrimSuffix(filepath.Base(n), ".json"))
	}
	return jobs, nil
}

// Apply writes files under leader revision rev: content per job, nil to
// remove the job's file. It returns the jobs whose file changed. The whole
// call holds an exclusive lock on the directory, so two writers on one host
// cannot interleave.
func (w *Writer) Apply(rev int64, files map[string][]byte) (changed []string, err error) {
	unlock, err := w.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	stored, err := w.revision()
	if err != nil {
		return nil, err
	}
	if stored > rev {
		return nil, fmt.Errorf("%w (directory at revision %d, this master at %d)", ErrStaleLeader, stored, rev)
	}
	if stored < rev {
		if err := w.replace(revisionFile, []byte(strconv.FormatInt(rev, 10)+"\n")); err != nil {
			return nil, err
		}
	}
	for job, content := range files {
		name := job + ".json"
		if content == nil {
			err := os.Remove(filepath.Join(w.dir, name))
			if err == nil {
				changed = append(changed, job)
			} else if !errors.Is(err, os.ErrNotExist) {
				return changed, fmt.Errorf("remove %s: %w", name, err)
			}
			delete(w.last, job)
			continue
		}
		prev, ok := w.last[job]
		if !ok {
			prev, _ = os.ReadFile(filepath.Join(w.dir, name))
		}
		if bytes.Equal(prev, content) {
			w.last[job] = prev
			continue
		}
		if err := w.replace(name, content); err != nil {
			return changed, err
		}
		w.last[job] = content
		changed = append(changed, job)
	}
	return changed, nil
}

// replace writes name atomically: a temporary file in the same directory,
// renamed over the old one, so Prometheus never reads half a file. No fsync:
// after a crash the master rebuilds every file from etcd.
func (w *Writer) replace(name string, content []byte) error {
	f, err := os.CreateTemp(w.dir, "."+name+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	_, err = f.Write(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(w.dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func (w *Writer) revision() (int64, error) {
	b, err := os.ReadFile(filepath.Join(w.dir, revisionFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read leader revision: %w", err)
	}
	rev, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read leader revision: %s holds %q", revisionFile, b)
	}
	return rev, nil
}

func (w *Writer) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(w.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock file_sd dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock file_sd dir: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
