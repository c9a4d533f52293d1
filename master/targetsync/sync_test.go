package targetsync

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/master/filesd"
	"github.com/agentproj/agent/slave"
	"github.com/agentproj/agent/stackconfig"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}

var keys = etcd.NewKeys("/agent", "test")

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// agent publishes exporters for node under its own session, as slave does.
type agent struct {
	sess   *concurrency.Session
	cancel context.CancelFunc
	done   chan struct{}
}

func publish(t *testing.T, cli *clientv3.Client, node string, exps []stackconfig.Exporter) *agent {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
	if err != nil {
		t.Fatal(err)
	}
	p := slave.NewTargetPublisher(node, keys, cli, quiet(), prometheus.NewRegistry())
	p.Set("exporters", slave.ExporterGroups(node, "test", exps))
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{sess: sess, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(a.done); _ = p.Run(ctx, sess) }()
	t.Cleanup(a.stop)
	return a
}

// stop is an agent leaving: its lease goes, and with it its targets.
func (a *agent) stop() {
	a.cancel()
	<-a.done
	a.sess.Close()
}

// term runs the duty for one term until stopped or the test ends.
type term struct {
	sync   *Sync
	sess   *concurrency.Session
	lead   etcd.Leader
	cancel context.CancelFunc
	done   chan error
}

// campaign wins a term for node (waiting for earlier terms to end).
func campaign(t testing.TB, cli *clientv3.Client, node string) (*concurrency.Session, etcd.Leader) {
	t.Helper()
	return etcdtest.Campaign(t, cli, keys, node, 5)
}

func runMaster(t *testing.T, cli *clientv3.Client, dir, node string) *term {
	t.Helper()
	sess, lead := campaign(t, cli, node)
	m := runSync(t, cli, dir, lead, nil)
	m.sess = sess
	return m
}

// runSync runs the duty for lead; onWrite, if not nil, sees every file write.
func runSync(t testing.TB, cli *clientv3.Client, dir string, lead etcd.Leader, onWrite func(string, []byte)) *term {
	t.Helper()
	w, err := filesd.NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &term{sync: New(cli, keys, w, quiet(), prometheus.NewRegistry()), lead: lead, done: make(chan error, 1)}
	m.sync.OnWrite = onWrite
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- m.sync.Run(ctx, lead) }()
	t.Cleanup(func() { m.stop() })
	return m
}

// stop ends the term and returns what Run returned.
func (m *term) stop() error {
	m.cancel()
	err, ok := <-m.done
	if ok {
		close(m.done)
	}
	return err
}

func read(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("../../testdata/filesd", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := read(t, path); got != want {
		t.Fatalf("%s differs from golden file (go test ./master/targetsync -update to accept):\n%s", name, got)
	}
}

func waitFile(t *testing.T, path string, cond func(string) bool, what string) string {
	t.Helper()
	var got string
	etcdtest.Eventually(t, 5*time.Second, func() bool { got = read(t, path); return cond(got) }, "%s: %s; have:\n%s", path, what, got)
	return got
}

func TestFileSDFollowsTargets(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	dir := t.TempDir()
	m := runMaster(t, cli, dir, "m1")

	publish(t, cli, "host-1", []stackconfig.Exporter{
		{Job: "node", Address: "127.0.0.1:9100", Labels: map[string]string{"rack": "r1"}},
		{Job: "app", Addresses: []string{"127.0.0.1:8081", "127.0.0.1:8080"}, MetricsPath: "/internal/metrics", Scheme: "https"},
	})
	host2 := publish(t, cli, "host-2", []stackconfig.Exporter{
		{Job: "node", Address: "127.0.0.2:9100", Labels: map[string]string{"team": "quote\" and ünïcode"}},
	})
	node := waitFile(t, filepath.Join(dir, "node.json"), func(s string) bool { return bytes.Count([]byte(s), []byte(`"targets"`)) == 2 }, "want two groups")
	golden(t, "node.json", node)
	// http_sd renders the same targets to the same bytes.
	set, err := etcd.Registry{KV: cli, Keys: keys}.Targets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var nodeJob []etcd.Target
	for _, tg := range set.Targets {
		if tg.Job == "node" {
			nodeJob = append(nodeJob, tg)
		}
	}
	if b, err := stackconfig.RenderFileSD(etcd.Groups(nodeJob)); err != nil || string(b) != node {
		t.Fatalf("http_sd rendering differs from node.json (%v):\n%s", err, b)
	}
	golden(t, "app.json", waitFile(t, filepath.Join(dir, "app.json"), func(s string) bool { return s != "" }, "want the app job"))

	// A value that does not parse, and one with a bad label name: skipped,
	// counted, never written.
	for _, bad := range []struct{ key, value string }{
		{keys.Target("host-3", "node", "0"), `{"targets": ["127.0.0.3:9100"`},
		{keys.Target("host-3", "node", "1"), `{"targets": ["127.0.0.3:9100"], "labels": {"bad-name": "x"}}`},
	} {
		if _, err := cli.Put(context.Background(), bad.key, bad.value); err != nil {
			t.Fatal(err)
		}
	}
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(m.sync.m.invalid) == 2
	}, "invalid values not counted")
	if got := read(t, filepath.Join(dir, "node.json")); got != node {
		t.Fatalf("invalid values changed node.json:\n%s", got)
	}

	// An agent that leaves takes its targets with it.
	host2.stop()
	waitFile(t, filepath.Join(dir, "node.json"), func(s string) bool {
		return bytes.Count([]byte(s), []byte(`"targets"`)) == 1 && !bytes.Contains([]byte(s), []byte("127.0.0.2"))
	}, "host-2's target still there")
	// A job with no targets left loses its file.
	if _, err := cli.Delete(context.Background(), keys.NodeTargets("host-1")+"app/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "app.json"), func(s string) bool { return s == "" }, "app.json not removed")
}

// After a failover the new master's files are byte for byte the old ones,
// and the old master cannot write over them.
func TestFailoverRebuildsIdenticalFiles(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	publish(t, cli, "host-1", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.1:9100"}, {Job: "app", Address: "127.0.0.1:8080"}})
	publish(t, cli, "host-2", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.2:9100"}})
	twoGroups := func(s string) bool { return bytes.Count([]byte(s), []byte(`"targets"`)) == 2 }

	dirA, dirB := t.TempDir(), t.TempDir()
	a := runMaster(t, cli, dirA, "a")
	before := waitFile(t, filepath.Join(dirA, "node.json"), twoGroups, "want two groups")
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.sess.Close(); err != nil { // a's lease ends: its term is over
		t.Fatal(err)
	}
	b := runMaster(t, cli, dirB, "b")
	after := waitFile(t, filepath.Join(dirB, "node.json"), twoGroups, "want two groups")
	if after != before {
		t.Fatalf("new master's node.json differs:\n%s\nold:\n%s", after, before)
	}
	if got, want := read(t, filepath.Join(dirB, "app.json")), read(t, filepath.Join(dirA, "app.json")); got != want || got == "" {
		t.Fatalf("app.json differs after failover: %q vs %q", got, want)
	}

	// The old master, still running with its old term on b's directory, is
	// refused and ends its term.
	stale := runSync(t, cli, dirB, a.lead, nil)
	etcdtest.Eventually(t, 5*time.Second, func() bool {
		select {
		case err := <-stale.done:
			stale.done <- err
			return errors.Is(err, filesd.ErrStaleLeader)
		default:
			return false
		}
	}, "stale master's sync did not stop with ErrStaleLeader")
	if got := read(t, filepath.Join(dirB, "node.json")); got != after {
		t.Fatalf("stale master changed node.json")
	}
	_ = b
}
