package stackconfig

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// update rewrites the golden files under testdata/render with what the
// renderers produce now: go test ./stackconfig -update, then review the diff.
var update = flag.Bool("update", false, "rewrite golden files in testdata/render")

// golden compares got with testdata/render/<name>, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "render", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./stackconfig -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the rendering (run go test ./stackconfig -update and review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
