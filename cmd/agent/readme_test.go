package main

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/agentproj/agent/stackconfig"
)

var update = flag.Bool("update", false, "rewrite the generated parts of README.md")

const (
	tableBegin = "<!-- join flags: generated from the flag definitions by `go test ./cmd/agent -run TestREADMEConfigTable -update` -->\n"
	tableEnd   = "<!-- end of join flags -->\n"
)

var placeholder = regexp.MustCompile(`<[a-z-]+>[^ )]*`)

// configTable renders the flags of `agent join` as the README's
// configuration table: flag, TOML key, environment variable, default and
// what it is for, in the order of `agent join --help`.
func configTable() string {
	keys := map[string]string{}
	for _, o := range stackconfig.JoinOptions {
		keys[o.Flag] = o.Key
	}
	var b strings.Builder
	b.WriteString("| flag | key | env | default | what |\n| --- | --- | --- | --- | --- |\n")
	newJoinCmd().Flags().VisitAll(func(f *pflag.Flag) {
		usage, env, ok := strings.Cut(f.Usage, " (env ")
		if !ok {
			panic("flag --" + f.Name + " does not name its environment variable")
		}
		env = strings.TrimSuffix(env, ")")
		def := f.DefValue
		if def == "[]" {
			def = ""
		}
		if def != "" {
			def = "`" + def + "`"
		}
		key := keys[f.Name]
		if key != "" {
			key = "`" + key + "`"
		}
		// <data-dir> would be read as an HTML tag.
		usage = placeholder.ReplaceAllString(usage, "`$0`")
		fmt.Fprintf(&b, "| `--%s` | %s | `%s` | %s | %s |\n", f.Name, key, env, def, usage)
	})
	return b.String()
}

// The README's configuration table is the flag definitions, generated:
// every flag of `agent join`, with the variable `--help` names, and no
// row for a flag that does not exist.
func TestREADMEConfigTable(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := bytes.Index(readme, []byte(tableBegin)), bytes.Index(readme, []byte(tableEnd))
	if begin < 0 || end < begin {
		t.Fatalf("README.md: no generated configuration table between %q and %q", tableBegin, tableEnd)
	}
	got := string(readme[begin+len(tableBegin) : end])
	want := configTable()
	if got == want {
		return
	}
	if *update {
		out := append(append(append([]byte{}, readme[:begin+len(tableBegin)]...), want...), readme[end:]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("README.md's configuration table differs from the flags of agent join; run go test ./cmd/agent -run TestREADMEConfigTable -update\n got:\n%s\nwant:\n%s", got, want)
}

// Every docs/*.md that the README, the Makefile, the deploy files or the
// docs themselves name exists, and none points outside the repository.
func TestDocReferencesExist(t *testing.T) {
	files := []string{"../../README.md", "../../Makefile"}
	m, _ := filepath.Glob("../../docs/*.md")
	files = append(files, m...)
	// Every file under deploy/, the agent's Helm chart included.
	err := filepath.WalkDir("../../deploy", func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ref := regexp.MustCompile(`(?:\.\./)*docs/[A-Za-z0-9_.-]+\.md|\.\./shared/[A-Za-z0-9_./-]+`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ref.FindAllString(string(b), -1) {
			if strings.HasPrefix(r, "../") {
				t.Errorf("%s names %s, outside the repository", f, r)
				continue
			}
			if _, err := os.Stat(filepath.Join("..", "..", r)); err != nil {
				t.Errorf("%s names %s, which does not exist", f, r)
			}
		}
	}
}

// The read-only commands never start an etcd, and their help says what an
// empty --etcd does for them.
func TestClientCommandsHelpOnEtcd(t *testing.T) {
	for _, name := range []string{"status", "targets"} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs([]string{name, "--help"})
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "embedded") {
			t.Errorf("agent %s --help speaks of an embedded etcd:\n%s", name, out.String())
		}
		if !strings.Contains(out.String(), "without them, the agent at --api is asked") {
			t.Errorf("agent %s --help does not say what an empty --etcd does:\n%s", name, out.String())
		}
	}
}
