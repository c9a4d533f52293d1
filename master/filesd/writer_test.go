package filesd

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestApplyWritesOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	changed, err := w.Apply(5, map[string][]byte{"node": []byte("[1]\n"), "app": []byte("[2]\n")})
	if err != nil || len(changed) != 2 {
		t.Fatalf("first apply: %v %v", changed, err)
	}
	st, _ := os.Stat(filepath.Join(dir, "node.json"))
	changed, err = w.Apply(5, map[string][]byte{"node": []byte("[1]\n"), "app": []byte("[3]\n")})
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
	if _, err := w.Apply(5, map[string][]byte{"app": nil}); err != nil {
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
	if _, err := w1.Apply(1, map[string][]byte{"node": []byte("[1]\n")}); err != nil {
		t.Fatal(err)
	}
	w2, _ := NewWriter(dir)
	changed, err := w2.Apply(2, map[string][]byte{"node": []byte("[1]\n")})
	if err != nil || len(changed) != 0 {
		t.Fatalf("identical content after restart rewritten: %v %v", changed, err)
	}
}

func TestStaleLeaderRefused(t *testing.T) {
	dir := t.TempDir()
	newer, _ := NewWriter(dir)
	stale, _ := NewWriter(dir)
	if _, err := newer.Apply(10, map[string][]byte{"node": []byte("[new]\n")}); err != nil {
		t.Fatal(err)
	}
	_, err := stale.Apply(9, map[string][]byte{"node": []byte("[stale]\n"), "x": nil})
	if !errors.Is(err, ErrStaleLeader) {
		t.Fatalf("stale apply: %v, want ErrStaleLeader", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "node.json")); string(b) != "[new]\n" {
		t.Fatalf("stale master changed node.json to %q", b)
	}
}
