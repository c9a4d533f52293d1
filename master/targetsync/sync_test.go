package targetsync

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
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
	return waitFileWithin(t, 5*time.Second, path, cond, what)
}

func waitFileWithin(t *testing.T, d time.Duration, path string, cond func(string) bool, what string) string {
	t.Helper()
	var got string
	poll.Until(t, d, func() bool { got = read(t, path); return cond(got) },
		"%s: %s; have:\n%s", path, what, poll.Latest(func() any { return got }))
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
		// "az" sorts its label set first: the order is the nodes', not the labels'.
		{Job: "node", Address: "127.0.0.2:9100", Labels: map[string]string{"team": "quote\" and ünïcode", "az": "a"}},
	})
	node := waitFile(t, filepath.Join(dir, "node.json"), func(s string) bool { return bytes.Count([]byte(s), []byte(`"targets"`)) == 2 }, "want two groups")
	golden(t, "node.json", node)
	// http_sd renders the same targets to the same bytes: the groups'
	// fragments by job, node and id.
	set, err := etcd.Registry{KV: cli, Keys: keys}.Targets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var frags [][]byte
	for _, tg := range set.Targets {
		if tg.Job == "node" {
			frags = append(frags, stackconfig.GroupJSON(tg.Group()))
		}
	}
	if b := stackconfig.JoinGroups(frags); string(b) != node {
		t.Fatalf("http_sd rendering differs from node.json:\n%s", b)
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

// An etcd that lost its data counts revisions from 1 again. The directory
// still holds the old etcd's higher leader revision; the new term must
// write over it and keep running, not step down again and again until the
// new etcd's revision passes the old one.
func TestNewEtcdHistoryStartsANewSequence(t *testing.T) {
	for _, c := range []struct {
		name string
		next func(t *testing.T, srv *etcdtest.Server, cli *clientv3.Client) *clientv3.Client
	}{
		{"etcd restored empty (same cluster ID)", func(t *testing.T, srv *etcdtest.Server, cli *clientv3.Client) *clientv3.Client {
			srv.Wipe()
			return cli
		}},
		{"etcd replaced (new cluster ID)", func(t *testing.T, _ *etcdtest.Server, _ *clientv3.Client) *clientv3.Client {
			return etcdtest.Start(t).Client()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := etcdtest.Start(t)
			cli := srv.Client()
			ctx := context.Background()
			dir := t.TempDir()
			for i := range 200 { // a long-lived cluster: a high revision
				if _, err := cli.Put(ctx, keys.Root()+"filler", fmt.Sprint(i)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cli.Put(ctx, keys.Target("host-1", "node", "0"), `{"targets":["127.0.0.1:9100"]}`); err != nil {
				t.Fatal(err)
			}
			sess, old := campaign(t, cli, "m1")
			first := runSync(t, cli, dir, old, nil)
			waitFile(t, filepath.Join(dir, "node.json"), func(s string) bool { return strings.Contains(s, "127.0.0.1:9100") }, "first etcd's target")
			if err := first.stop(); err != nil {
				t.Fatal(err)
			}
			sess.Close()

			cli = c.next(t, srv, cli)
			etcdtest.Eventually(t, 10*time.Second, func() bool {
				_, err := cli.Put(ctx, keys.Target("host-1", "node", "0"), `{"targets":["127.0.0.9:9100"]}`)
				return err == nil
			}, "new etcd does not take writes")
			_, lead := campaign(t, cli, "m1")
			if lead.Rev >= old.Rev {
				t.Fatalf("new etcd's term revision %d is not below the old one's %d: the test proves nothing", lead.Rev, old.Rev)
			}
			m := runSync(t, cli, dir, lead, nil)
			waitFile(t, filepath.Join(dir, "node.json"), func(s string) bool { return strings.Contains(s, "127.0.0.9:9100") }, "new etcd's target not written")
			select {
			case err := <-m.done:
				m.done <- err
				t.Fatalf("the new term's sync ended: %v", err)
			default:
			}
		})
	}
}

// Values that break the rule (job names that are no file name, non-UTF-8
// label values, reserved labels, oversized groups) are skipped and counted;
// they never reach the directory and never hold up the other jobs.
func TestBadValuesAreSkippedAndNeverStallOthers(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	ctx := context.Background()
	dir := t.TempDir()
	good := `{"targets":["127.0.0.1:9100"]}`
	bad := map[string]string{
		keys.Target("host-1", strings.Repeat("j", 300), "0"): good,
		keys.Target("host-1", "a\nb", "0"):                   good,
		keys.Target("host-1", "..", "0"):                     good,
		keys.Target("host-1", ".leader-revision", "0"):       good,
		keys.Target("host-1", `a\b`, "0"):                    good,
		keys.Target("host-1", "node", "1"):                   "{\"targets\":[\"127.0.0.2:9100\"],\"labels\":{\"x\":\"\xff\"}}",
		keys.Target("host-1", "node", "2"):                   `{"targets":["127.0.0.3:9100"],"labels":{"__address__":"10.0.0.1:80"}}`,
		keys.Target("host-1", "node", "3"):                   `{"targets":["127.0.0.4:9100"],"labels":{"pad":"` + strings.Repeat("x", 20000) + `"}}`,
	}
	for k, v := range bad {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, keys.Target("host-1", "node", "0"), good); err != nil {
		t.Fatal(err)
	}
	m := runMaster(t, cli, dir, "m1")
	waitFile(t, filepath.Join(dir, "node.json"), func(s string) bool { return strings.Contains(s, "127.0.0.1:9100") }, "good target not written")
	etcdtest.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(m.sync.m.invalid) == float64(len(bad)) },
		"invalid values counted %v, want %d", testutil.ToFloat64(m.sync.m.invalid), len(bad))

	// Later changes of the good job are followed.
	if _, err := cli.Put(ctx, keys.Target("host-1", "node", "0"), `{"targets":["127.0.0.5:9100"]}`); err != nil {
		t.Fatal(err)
	}
	got := waitFile(t, filepath.Join(dir, "node.json"), func(s string) bool { return strings.Contains(s, "127.0.0.5:9100") }, "change of the good job not followed")
	for _, addr := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		if strings.Contains(got, addr) {
			t.Fatalf("node.json holds the invalid group of %s:\n%s", addr, got)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if n := e.Name(); n != "node.json" && n != ".leader-revision" && n != ".lock" {
			t.Errorf("unexpected file %q in the file_sd directory", n)
		}
	}
}

// writes records every file write of a Sync, in order.
type writes struct {
	mu  sync.Mutex
	log []write
}

type write struct {
	at      time.Time
	job     string
	content string // "" when removed
}

func (w *writes) record(job string, content []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, write{time.Now(), job, string(content)})
}

// all returns the writes so far.
func (w *writes) all() []write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

// lostAt returns when a write of job last lacked want (or removed it).
func (w *writes) lostAt(job, want string) (time.Time, bool) {
	for _, x := range slices.Backward(w.all()) {
		if x.job == job && !strings.Contains(x.content, want) {
			return x.at, true
		}
	}
	return time.Time{}, false
}

// neverLost fails the test if a write of job ever lacked want.
func (w *writes) neverLost(t *testing.T, job, want string) {
	t.Helper()
	for _, x := range w.all() {
		if x.job == job && !strings.Contains(x.content, want) {
			t.Errorf("at %s %s.json was written without %s:\n%s", x.at.Format("15:04:05.000"), job, want, x.content)
		}
	}
}

// runTerm runs s for lead until the returned stop is called.
func runTerm(t *testing.T, s *Sync, lead etcd.Leader) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, lead) }()
	var once sync.Once
	var err error
	stop = func() error { once.Do(func() { cancel(); err = <-done }); return err }
	t.Cleanup(func() { _ = stop() })
	return stop
}

// An etcd outage longer than the TTL: every lease expires, the master's
// term ends, and the agents come back one by one. The files keep every
// live agent's targets through the outage and the re-registration; only
// the agent that died during the outage leaves, TTL + about a second after
// the master reads etcd again.
func TestOutageKeepsTargetsUntilAgentsReRegister(t *testing.T) {
	const ttl = 2 * time.Second
	srv := etcdtest.Start(t)
	direct := srv.Client()
	pxM, pxA := srv.Proxy(), srv.Proxy()
	cliM, cliA := srv.ClientVia(pxM.Endpoint()), srv.ClientVia(pxA.Endpoint())
	dir := t.TempDir()

	exps := func(addr, only string) []stackconfig.Exporter {
		return []stackconfig.Exporter{{Job: "node", Address: addr}, {Job: only, Address: addr}}
	}
	a := publish(t, cliA, "host-a", exps("127.0.0.2:9100", "only-a"))
	b := publish(t, cliA, "host-b", exps("127.0.0.3:9100", "only-b"))

	w, err := filesd.NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seen writes
	s := New(cliM, keys, w, quiet(), prometheus.NewRegistry(), WithTTL(ttl))
	s.OnWrite = seen.record
	sessM, lead := etcdtest.Campaign(t, cliM, keys, "m", int(ttl/time.Second))
	stop := runTerm(t, s, lead)
	waitFile(t, filepath.Join(dir, "node.json"), func(c string) bool {
		return strings.Contains(c, "127.0.0.2:9100") && strings.Contains(c, "127.0.0.3:9100")
	}, "both agents' targets")
	waitFile(t, filepath.Join(dir, "only-a.json"), func(c string) bool { return c != "" }, "only-a.json")
	waitFile(t, filepath.Join(dir, "only-b.json"), func(c string) bool { return c != "" }, "only-b.json")

	// etcd goes away for everyone; agent b dies meanwhile.
	pxM.Cut()
	pxA.Cut()
	b.cancel()
	<-b.done
	// The master's session expires, which ends its term (as slave.Node does).
	select {
	case <-sessM.Done():
	case <-time.After(3 * ttl):
		t.Fatal("master's session did not end in the outage")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// On the server every lease expires: no target is left in etcd.
	etcdtest.Eventually(t, 3*ttl, func() bool {
		resp, err := direct.Get(context.Background(), keys.Targets(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	}, "leases did not expire in the outage")

	// etcd is back for the master first: a new term of the same agent.
	pxM.Restore()
	_, lead2 := etcdtest.Campaign(t, cliM, keys, "m", int(ttl/time.Second))
	runTerm(t, s, lead2)
	etcdtest.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(s.m.resyncs) == 2 }, "no full read in the new term")
	read := time.Now()

	// Agent a comes back later, within a TTL, with a new session.
	pxA.Restore()
	a.cancel()
	<-a.done
	publish(t, srv.ClientVia(pxA.Endpoint()), "host-a", exps("127.0.0.2:9100", "only-a"))
	etcdtest.Eventually(t, time.Until(read.Add(ttl)), func() bool {
		resp, err := direct.Get(context.Background(), keys.NodeTargets("host-a"), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	}, "agent a did not re-register within a TTL of the master's read (a slow machine?)")

	// b, dead, leaves when the hold ends: max(TTL, RejoinMax) + HoldMargin
	// after the master's read.
	hold := s.hold.Hold()
	waitFileWithin(t, hold+5*time.Second, filepath.Join(dir, "only-b.json"), func(c string) bool { return c == "" }, "dead agent's job file not removed")
	waitFile(t, filepath.Join(dir, "node.json"), func(c string) bool { return !strings.Contains(c, "127.0.0.3:9100") }, "dead agent's target not removed")
	gone, _ := seen.lostAt("node", "127.0.0.3:9100")
	if d := gone.Sub(read); d > hold+time.Second {
		t.Errorf("dead agent's target left %s after the master read etcd again, want within the hold %s + about a second", d, hold)
	}
	// a was never dropped, nor its job's file.
	seen.neverLost(t, "node", "127.0.0.2:9100")
	seen.neverLost(t, "only-a", "127.0.0.2:9100")
}

// A short outage that does not end the master's term but expires an
// agent's lease: the watch resumes with the deletions. They are held as
// well; and once etcd has answered for a TTL, a removal shows at once.
func TestShortOutageHoldsExpiredLeasesAndThenNot(t *testing.T) {
	const ttl = 2 * time.Second
	srv := etcdtest.Start(t)
	direct := srv.Client()
	px := srv.Proxy()
	cliM := srv.ClientVia(px.Endpoint())
	dir := t.TempDir()
	a := publish(t, direct, "host-a", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.2:9100"}})
	b := publish(t, direct, "host-b", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.3:9100"}})
	c := publish(t, direct, "host-c", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.4:9100"}})

	w, err := filesd.NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seen writes
	s := New(cliM, keys, w, quiet(), prometheus.NewRegistry(), WithTTL(ttl))
	s.OnWrite = seen.record
	_, lead := etcdtest.Campaign(t, direct, keys, "m", 5)
	runTerm(t, s, lead)
	all := func(c string) bool {
		return strings.Contains(c, "127.0.0.2:9100") && strings.Contains(c, "127.0.0.3:9100") && strings.Contains(c, "127.0.0.4:9100")
	}
	waitFile(t, filepath.Join(dir, "node.json"), all, "three agents' targets")

	// The master is cut off for longer than half a TTL; meanwhile a's and
	// b's leases go (revoked here, as an expiry would delete them).
	px.Cut()
	cut := time.Now()
	a.stop()
	b.stop()
	time.Sleep(time.Until(cut.Add(ttl * 3 / 4))) // the outage's length, not a wait for a result
	px.Restore()
	// The watch resumes and sees both deletions; a re-registers in time, b
	// does not.
	etcdtest.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(s.m.held) == 2 }, "removals after the outage not held")
	publish(t, direct, "host-a", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.2:9100"}})
	waitFileWithin(t, s.hold.Hold()+5*time.Second, filepath.Join(dir, "node.json"), func(c string) bool { return !strings.Contains(c, "127.0.0.3:9100") }, "b not removed after the hold")
	seen.neverLost(t, "node", "127.0.0.2:9100")

	// b left when the hold ended; etcd has answered since: c's death
	// shows at once.
	c.stop()
	stopped := time.Now()
	waitFile(t, filepath.Join(dir, "node.json"), func(c string) bool { return !strings.Contains(c, "127.0.0.4:9100") }, "c not removed")
	if at, _ := seen.lostAt("node", "127.0.0.4:9100"); at.Sub(stopped) > time.Second {
		t.Errorf("c's target left %s after its lease was revoked in a healthy etcd, want at once", at.Sub(stopped))
	}
}

// A term that ends while etcd answers (resigned, lost, shut down) keeps
// nothing: the agent's next term, maybe much later, starts from etcd alone
// and holds no removal against an old set.
func TestTermEndedWhileHealthyStartsFromEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client()
	dir := t.TempDir()
	a := publish(t, cli, "host-a", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.2:9100"}, {Job: "only-a", Address: "127.0.0.2:9100"}})
	publish(t, cli, "host-b", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.3:9100"}})
	w, err := filesd.NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := New(cli, keys, w, quiet(), prometheus.NewRegistry(), WithTTL(2*time.Second))
	sess, lead := etcdtest.Campaign(t, cli, keys, "m", 2)
	stop := runTerm(t, s, lead)
	waitFile(t, filepath.Join(dir, "only-a.json"), func(c string) bool { return c != "" }, "only-a.json")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sess.Close()
	a.stop() // between the terms
	_, lead2 := etcdtest.Campaign(t, cli, keys, "m", 2)
	runTerm(t, s, lead2)
	etcdtest.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(s.m.resyncs) == 2 }, "no full read in the second term")
	// A hold would keep it for etcd.HoldFor(2 s) = 6 s.
	etcdtest.Eventually(t, 2*time.Second, func() bool { return read(t, filepath.Join(dir, "only-a.json")) == "" },
		"the second term kept a job that was gone when it read etcd")
	if got := testutil.ToFloat64(s.m.held); got != 0 {
		t.Fatalf("%v removals held, want none", got)
	}
}

// A quiet cluster (nothing written since the master read it) is a healthy
// etcd, not a silent one: an agent that leaves is removed from the files at
// once, not held as after an outage. etcd 3.6+ answers no progress request
// of a watch that started at a revision it has not reached, so the duty
// must hear from etcd some other way.
func TestQuietClusterShowsRemovalAtOnce(t *testing.T) {
	const ttl = 2 * time.Second
	srv := etcdtest.Start(t)
	cli := srv.Client()
	dir := t.TempDir()
	a := publish(t, cli, "host-a", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.2:9100"}})
	publish(t, cli, "host-b", []stackconfig.Exporter{{Job: "node", Address: "127.0.0.3:9100"}})
	w, err := filesd.NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seen writes
	s := New(cli, keys, w, quiet(), prometheus.NewRegistry(), WithTTL(ttl))
	s.OnWrite = seen.record
	_, lead := etcdtest.Campaign(t, cli, keys, "m", 5)
	runTerm(t, s, lead)
	waitFile(t, filepath.Join(dir, "node.json"), func(c string) bool {
		return strings.Contains(c, "127.0.0.2:9100") && strings.Contains(c, "127.0.0.3:9100")
	}, "both agents' targets")

	time.Sleep(ttl) // the quiet time, longer than the silence that counts as an outage (TTL/2); not a wait for a result
	a.stop()
	stopped := time.Now()
	waitFile(t, filepath.Join(dir, "node.json"), func(c string) bool { return !strings.Contains(c, "127.0.0.2:9100") }, "a not removed")
	if at, _ := seen.lostAt("node", "127.0.0.2:9100"); at.Sub(stopped) > time.Second {
		t.Errorf("a's target left %s after its lease was revoked in a quiet, healthy etcd, want at once", at.Sub(stopped))
	}
	if got := testutil.ToFloat64(s.m.held); got != 0 {
		t.Errorf("%v removals held in a healthy etcd, want none", got)
	}
}
