package slave

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseFile remembers, in the agent's data dir, which lease the agent holds
// for which member key. After a crash (kill -9, OOM, power loss) that lease
// outlives the process: for up to a TTL on an external etcd, for a whole
// new TTL on the embedded one, which restarts every lease at full length.
// The next run of the same node on the same data dir reads the file and
// revokes that lease instead of taking its own member record for another
// agent's. The data dir is locked by one agent at a time (cmd/agent), so
// the lease named here belongs to a process that is gone.
type leaseFile struct {
	path string // "" keeps nothing
}

type leaseRecord struct {
	Key   string `json:"key"`   // the member key the lease holds
	Lease string `json:"lease"` // hex, as etcd and the logs print it
}

// read returns the lease recorded for key, or 0 when there is none (no
// file, another key, or a file that does not parse: then nothing is taken
// over and registration falls back to waiting for the lease to expire).
func (f leaseFile) read(key string) (clientv3.LeaseID, error) {
	if f.path == "" {
		return 0, nil
	}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var rec leaseRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return 0, fmt.Errorf("%s: %w", f.path, err)
	}
	if rec.Key != key {
		return 0, nil
	}
	id, err := strconv.ParseUint(rec.Lease, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: lease %q: %w", f.path, rec.Lease, err)
	}
	return clientv3.LeaseID(id), nil
}

// write records id for key durably before any key is put under the lease,
// so that no crash can leave keys under a lease the next run does not know.
func (f leaseFile) write(key string, id clientv3.LeaseID) error {
	if f.path == "" {
		return nil
	}
	b, err := json.Marshal(leaseRecord{Key: key, Lease: strconv.FormatUint(uint64(id), 16)})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o750); err != nil {
		return err
	}
	tmp := f.path + ".tmp"
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := t.Write(append(b, '\n'))
	serr := t.Sync()
	cerr := t.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return err
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(f.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// remove forgets the lease after a clean stop revoked it.
func (f leaseFile) remove() error {
	if f.path == "" {
		return nil
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
