package filesd

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestApplyWritesOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	changed, _, err := w.Apply(Term{Rev: 5}, map[string][]byte{"node": []byte("[1]\n"), "app": []byte("[2]\n")})
	if err != nil || len(changed) != 2 {
		t.Fatalf("first apply: %v %v", changed, err)
	}
	st, _ := os.Stat(filepath.Join(dir, "node.json"))
	changed, _, err = w.Apply(Term{Rev: 5}, map[string][]byte{"node": []byte("[1]\n"), "app": []byte("[3]\n")})
	if err != nil || !slices.Equal(changed, []string{"app"}) {
		t.Fatalf("second apply changed %v (%v), want only app", changed, err)
	}
	st2, _ := os.Stat(filepath.Join(dir, "node.json"))
	if !os.SameFile(st, st2) {
		t.Fatal("node.json was replaced though its bytes did not change")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app.json")); string(b) != "[3]\n" {
		t.Fatalf("app.json = %q", b)
	}
	if _, _, err := w.Apply(Term{Rev: 5}, map[string][]byte{"app": nil}); err != nil {
		t.Fatal(err)
	}
	jobs, _ := w.Jobs()
	if !slices.Equal(jobs, []string{"node"}) {
		t.Fatalf("jobs after removing app: %v", jobs)
	}
	// No temporary files are left behind.
	left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// A fresh writer (a restarted master) compares with what is on disk.
func TestApplyComparesWithDisk(t *testing.T) {
	dir := t.TempDir()
	w1, _ := NewWriter(dir)
	if _, _, err := w1.Apply(Term{Rev: 1}, map[string][]byte{"node": []byte("[1]\n")}); err != nil {
		t.Fatal(err)
	}
	w2, _ := NewWriter(dir)
	changed, _, err := w2.Apply(Term{Rev: 2}, map[string][]byte{"node": []byte("[1]\n")})
	if err != nil || len(changed) != 0 {
		t.Fatalf("identical content after restart rewritten: %v %v", changed, err)
	}
}

func TestStaleLeaderRefused(t *testing.T) {
	dir := t.TempDir()
	newer, _ := NewWriter(dir)
	stale, _ := NewWriter(dir)
	if _, _, err := newer.Apply(Term{Rev: 10}, map[string][]byte{"node": []byte("[new]\n")}); err != nil {
		t.Fatal(err)
	}
	_, _, err := stale.Apply(Term{Rev: 9}, map[string][]byte{"node": []byte("[stale]\n"), "x": nil})
	if !errors.Is(err, ErrStaleLeader) {
		t.Fatalf("stale apply: %v, want ErrStaleLeader", err)
	}
	// What the log shows: no package prefix, the revisions that decided.
	if want := "a newer master has written the file_sd directory (directory at revision 10, this master at 9)"; err.Error() != want {
		t.Fatalf("stale apply: %q, want %q", err, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "node.json")); string(b) != "[new]\n" {
		t.Fatalf("stale master changed node.json to %q", b)
	}
}

// The fence orders terms of one etcd history only. A record of another
// cluster, or one above anything the current etcd has issued (an etcd
// restored empty under the same cluster ID), starts a new sequence; a
// newer term of the same history is still refused.
func TestFenceFollowsTheEtcdHistory(t *testing.T) {
	const oldCluster, newCluster = 0xaaaa, 0xbbbb
	etcdAt := func(rev int64) func() (int64, error) { return func() (int64, error) { return rev, nil } }
	for _, c := range []struct {
		name    string
		stored  Term   // written first
		next    Term   // then this term writes
		refused bool   // with ErrStaleLeader
		newSeq  bool   // OnNewSequence called
		file    string // revision file afterwards
	}{
		{name: "another cluster, lower revision",
			stored: Term{ClusterID: oldCluster, Rev: 5000}, next: Term{ClusterID: newCluster, Rev: 3, Revision: etcdAt(4)},
			newSeq: true, file: `{"cluster_id":"bbbb","revision":3}`},
		{name: "same cluster ID, revision never issued by this etcd",
			stored: Term{ClusterID: oldCluster, Rev: 5000}, next: Term{ClusterID: oldCluster, Rev: 3, Revision: etcdAt(4)},
			newSeq: true, file: `{"cluster_id":"aaaa","revision":3}`},
		{name: "same cluster, newer term",
			stored: Term{ClusterID: oldCluster, Rev: 50}, next: Term{ClusterID: oldCluster, Rev: 30, Revision: etcdAt(60)},
			refused: true, file: `{"cluster_id":"aaaa","revision":50}`},
		{name: "unknown cluster, newer term, no way to ask etcd",
			stored: Term{Rev: 50}, next: Term{ClusterID: oldCluster, Rev: 30},
			refused: true, file: `{"cluster_id":"0","revision":50}`},
		{name: "same cluster, later term",
			stored: Term{ClusterID: oldCluster, Rev: 50}, next: Term{ClusterID: oldCluster, Rev: 70},
			file: `{"cluster_id":"aaaa","revision":70}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			first, _ := NewWriter(dir)
			if _, _, err := first.Apply(c.stored, map[string][]byte{"node": []byte("[old]\n")}); err != nil {
				t.Fatal(err)
			}
			w, _ := NewWriter(dir)
			var newSeq bool
			w.OnNewSequence = func(uint64, int64) { newSeq = true }
			_, _, err := w.Apply(c.next, map[string][]byte{"node": []byte("[new]\n")})
			if refused := errors.Is(err, ErrStaleLeader); refused != c.refused || (err != nil && !refused) {
				t.Fatalf("Apply = %v, want refused=%v", err, c.refused)
			}
			if newSeq != c.newSeq {
				t.Fatalf("new sequence = %v, want %v", newSeq, c.newSeq)
			}
			want := "[new]\n"
			if c.refused {
				want = "[old]\n"
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "node.json")); string(b) != want {
				t.Fatalf("node.json = %q, want %q", b, want)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, revisionFile)); string(b) != c.file+"\n" {
				t.Fatalf("%s = %q, want %q", revisionFile, b, c.file)
			}
		})
	}
}

// A revision file of an earlier version (a bare number) still fences.
func TestOldRevisionFileStillFences(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, revisionFile), []byte("40\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, _ := NewWriter(dir)
	stale := Term{ClusterID: 7, Rev: 30, Revision: func() (int64, error) { return 45, nil }}
	if _, _, err := w.Apply(stale, map[string][]byte{"node": []byte("[x]\n")}); !errors.Is(err, ErrStaleLeader) {
		t.Fatalf("Apply under an older term = %v, want ErrStaleLeader", err)
	}
	if _, _, err := w.Apply(Term{ClusterID: 7, Rev: 41}, map[string][]byte{"node": []byte("[x]\n")}); err != nil {
		t.Fatal(err)
	}
}

// A job that cannot be written (a name outside the rule, here) fails alone.
func TestBadJobFailsAlone(t *testing.T) {
	dir := t.TempDir()
	w, _ := NewWriter(dir)
	files := map[string][]byte{"node": []byte("[1]\n"), ".leader-revision": []byte("[2]\n"), strings.Repeat("j", 300): []byte("[3]\n"), "a\nb": []byte("[4]\n")}
	changed, failed, err := w.Apply(Term{Rev: 1}, files)
	if err != nil || !slices.Equal(changed, []string{"node"}) || len(failed) != 3 {
		t.Fatalf("Apply = changed %v, failed %v, %v; want only node written and three failures", changed, failed, err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{".leader-revision", ".lock", "node.json"}) {
		t.Fatalf("files in the directory: %q", names)
	}
	// A stray file with a name no job can have is not the writer's.
	if err := os.WriteFile(filepath.Join(dir, ".x.json"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := w.Jobs(); !slices.Equal(jobs, []string{"node"}) {
		t.Fatalf("Jobs = %v", jobs)
	}
}
