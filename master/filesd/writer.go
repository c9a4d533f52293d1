package filesd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cespare/xxhash/v2"

	"github.com/agentproj/agent/stackconfig"
)

// ErrStaleLeader means the directory was last written by a newer term of
// the same etcd history than the caller's. Its text reaches the agent's
// log: it names the directory as the user knows it (file_sd), not this
// package.
var ErrStaleLeader = errors.New("a newer master has written the file_sd directory")

const revisionFile = ".leader-revision"

// Term is what the directory is fenced by: the etcd cluster a master was
// elected in and the create revision of its election key.
//
// Leader revisions order the terms of one etcd history only. An etcd that
// is replaced, or restored empty, counts from 1 again, so a revision
// recorded under the old one says nothing about the new one: a directory
// record of another cluster ID starts a new sequence, and so does one whose
// revision is above anything this etcd has issued (a wiped etcd started
// with the same name and peer URLs gets the same cluster ID back).
type Term struct {
	ClusterID uint64 // etcd cluster ID; 0 if unknown (then only revisions count)
	Rev       int64  // create revision of the term's election key

	// Revision reads the revision the etcd is at now. Apply calls it only
	// when the directory holds a higher revision of the same cluster, to
	// tell a newer master (refuse) from an older etcd history (start a new
	// sequence). nil: always refuse. An error that wraps ErrStaleLeader
	// (the caller learnt that its term is over) is returned as it is.
	Revision func() (int64, error)
}

// record is the content of the revision file.
type record struct {
	ClusterID string `json:"cluster_id,omitempty"` // hex, as etcdctl prints it
	Revision  int64  `json:"revision"`
}

// Writer writes file_sd files into one directory.
type Writer struct {
	dir  string
	last map[string]digest // job -> what was last written or found on disk

	// OnNewSequence, when set, is called when a write starts a new sequence
	// over a record of another etcd history, with that record.
	OnNewSequence func(clusterID uint64, rev int64)
}

// NewWriter creates dir if needed.
func NewWriter(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("file_sd dir: %w", err)
	}
	return &Writer{dir: dir, last: map[string]digest{}}, nil
}

// Dir is the directory written.
func (w *Writer) Dir() string { return w.dir }

// Jobs lists the jobs that have a file in the directory. Files whose name is
// not a valid job (stackconfig.ValidJobName) are not the writer's and are
// left out, so they are never removed.
func (w *Writer) Jobs() ([]string, error) {
	names, err := filepath.Glob(filepath.Join(w.dir, "*.json"))
	if err != nil {
		return nil, err
	}
	jobs := make([]string, 0, len(names))
	for _, n := range names {
		if job := strings.TrimSuffix(filepath.Base(n), ".json"); stackconfig.ValidJobName(job) {
			jobs = append(jobs, job)
		}
	}
	return jobs, nil
}

// Apply writes files under term t: content per job, nil to remove the
// job's file. The whole call holds an exclusive lock on the directory, so
// two writers on one host cannot interleave.
//
// err is for the directory as a whole (a newer term wrote it:
// ErrStaleLeader; the lock or the revision file failed): nothing was
// written. Otherwise every job is tried: changed lists the files replaced
// or removed, and failed the jobs that could not be (a name outside
// stackconfig.ValidJobName, a full disk), which never keeps the others
// from being written.
func (w *Writer) Apply(t Term, files map[string][]byte) (changed []string, failed map[string]error, err error) {
	unlock, err := w.lock()
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	if err := w.fence(t); err != nil {
		return nil, nil, err
	}
	for job, content := range files {
		ok, err := w.apply(job, content)
		if err != nil {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[job] = err
			continue
		}
		if ok {
			changed = append(changed, job)
		}
	}
	return changed, failed, nil
}

// fence checks t against the directory's record and records t.
func (w *Writer) fence(t Term) error {
	stored, err := w.record()
	if err != nil {
		return err
	}
	sameCluster := stored.cluster == 0 || t.ClusterID == 0 || stored.cluster == t.ClusterID
	if sameCluster && stored.rev == t.Rev {
		return nil
	}
	if sameCluster && stored.rev > t.Rev {
		// Newer master, or an etcd that lost its history?
		if t.Revision == nil {
			return fmt.Errorf("%w (directory at revision %d, this master at %d)", ErrStaleLeader, stored.rev, t.Rev)
		}
		now, err := t.Revision()
		if err != nil {
			return err
		}
		if stored.rev <= now {
			return fmt.Errorf("%w (directory at revision %d, this master at %d)", ErrStaleLeader, stored.rev, t.Rev)
		}
		sameCluster = false // never issued by this etcd
	}
	if !sameCluster && w.OnNewSequence != nil {
		w.OnNewSequence(stored.cluster, stored.rev)
	}
	b, _ := json.Marshal(record{ClusterID: fmt.Sprintf("%x", t.ClusterID), Revision: t.Rev})
	return w.replace(revisionFile, append(b, '\n'))
}

// apply writes or removes one job's file; ok reports a change.
func (w *Writer) apply(job string, content []byte) (ok bool, err error) {
	if !stackconfig.ValidJobName(job) {
		return false, fmt.Errorf("job %q: must be %s", job, stackconfig.JobNameRule)
	}
	name := job + ".json"
	if content == nil {
		err := os.Remove(filepath.Join(w.dir, name))
		delete(w.last, job)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("remove %s: %w", name, err)
		}
		return true, nil
	}
	d := digestOf(content)
	prev, ok := w.last[job]
	if !ok {
		b, err := os.ReadFile(filepath.Join(w.dir, name))
		prev, ok = digestOf(b), err == nil
	}
	if ok && prev == d {
		w.last[job] = prev
		return false, nil
	}
	if err := w.replace(name, content); err != nil {
		delete(w.last, job)
		return false, err
	}
	w.last[job] = d
	return true, nil
}

// digest stands for a file's content: the writer compares against it
// instead of keeping every file in memory (a job of 10,000 groups is a
// 3.4 MB file). Length and 64-bit hash: a change that keeps both is
// beyond any real chance.
type digest struct {
	n   int
	sum uint64
}

func digestOf(b []byte) digest { return digest{n: len(b), sum: xxhash.Sum64(b)} }

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

type stored struct {
	cluster uint64
	rev     int64
}

// record reads the revision file: JSON, or a bare revision as written by
// earlier versions (cluster unknown). No file is revision 0.
func (w *Writer) record() (stored, error) {
	b, err := os.ReadFile(filepath.Join(w.dir, revisionFile))
	if errors.Is(err, os.ErrNotExist) {
		return stored{}, nil
	}
	if err != nil {
		return stored{}, fmt.Errorf("read leader revision: %w", err)
	}
	if rev, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
		return stored{rev: rev}, nil
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return stored{}, fmt.Errorf("read leader revision: %s holds %q", revisionFile, b)
	}
	var cluster uint64
	if r.ClusterID != "" {
		if cluster, err = strconv.ParseUint(r.ClusterID, 16, 64); err != nil {
			return stored{}, fmt.Errorf("read leader revision: %s holds cluster_id %q", revisionFile, r.ClusterID)
		}
	}
	return stored{cluster: cluster, rev: r.Revision}, nil
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
