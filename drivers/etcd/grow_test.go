package etcd_test

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/logbuf"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
)

const growPrefix = "/agent"

// memberConfig is an agent's member on free loopback ports.
func memberConfig(t *testing.T, name string) etcd.EmbedConfig {
	return etcd.EmbedConfig{
		Name: name, Dir: t.TempDir() + "/etcd",
		ClientURL: "http://" + etcdtest.FreeAddr(t), PeerURL: "http://" + etcdtest.FreeAddr(t),
	}
}

func startMember(t *testing.T, cfg etcd.EmbedConfig) *etcd.Embedded {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := etcd.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatalf("start member %s: %v", cfg.Name, err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// found starts the first member of a cluster that grows to members, as
// an agent with no endpoints does.
func found(t *testing.T, members int) (etcd.EmbedConfig, *etcd.Embedded, *clientv3.Client) {
	t.Helper()
	cfg := memberConfig(t, "founder")
	srv := startMember(t, cfg)
	cli := etcdtest.NewClient(t, cfg.ClientURL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := etcd.SetGrowth(ctx, cli, growPrefix, etcd.Growth{Members: members}); err != nil {
		t.Fatal(err)
	}
	return cfg, srv, cli
}

// joiner is an agent that joined with endpoint, its member config and its
// log.
type joiner struct {
	etcd.Grower
	log *logbuf.Buffer
}

func newJoiner(t *testing.T, name, endpoint string) joiner {
	log := &logbuf.Buffer{}
	return joiner{etcd.Grower{
		Client: etcdtest.NewClient(t, endpoint), Prefix: growPrefix, Member: memberConfig(t, name),
		Logger: slog.New(slog.NewTextHandler(log, nil)), PromoteTimeout: 30 * time.Second,
	}, log}
}

func (j joiner) join(t *testing.T) *etcd.Embedded {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := j.Join(ctx)
	if err != nil {
		t.Fatalf("%s: join: %v", j.Member.Name, err)
	}
	if srv != nil {
		t.Cleanup(srv.Close)
	}
	return srv
}

// run runs the joiner's Run (every 100 ms) until the test ends.
func (j *joiner) run(t *testing.T) {
	j.SyncInterval = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", j.Member.Name, err)
		}
	})
}

type memberView struct {
	names    []string // started voting members
	learners int
	total    int
}

func members(t *testing.T, cli *clientv3.Client) memberView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatalf("member list: %v", err)
	}
	var v memberView
	for _, m := range resp.Members {
		v.total++
		if m.IsLearner {
			v.learners++
		} else if m.Name != "" {
			v.names = append(v.names, m.Name)
		}
	}
	slices.Sort(v.names)
	return v
}

// canWrite reports whether a put through endpoints is committed now.
func canWrite(endpoints ...string) func() bool {
	return func() bool {
		cli, err := etcd.NewClient(etcd.ClientConfig{Endpoints: endpoints, DialTimeout: time.Second})
		if err != nil {
			return false
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = cli.Put(ctx, "/agent/probe", "x")
		return err == nil
	}
}

func TestClusterGrowsToItsMembersAndOutlivesTheFounder(t *testing.T) {
	founder, founderSrv, cli := found(t, 3)
	a, b, c := newJoiner(t, "a", founder.ClientURL), newJoiner(t, "b", founder.ClientURL), newJoiner(t, "c", founder.ClientURL)
	srvA, srvB := a.join(t), b.join(t)
	if srvA == nil || srvB == nil {
		t.Fatalf("a and b should have become members; logs:\n%s\n%s", a.log, b.log)
	}
	if srv := c.join(t); srv != nil {
		t.Fatalf("c became a fourth member of a cluster that grows to 3")
	}
	if !strings.Contains(c.log.String(), "etcd has its members") {
		t.Errorf("c's log does not say why it stays a client:\n%s", c.log)
	}
	if v := members(t, cli); !slices.Equal(v.names, []string{"a", "b", "founder"}) || v.total != 3 {
		t.Fatalf("members = %+v, want a, b and founder voting, nothing else", v)
	}
	if !etcd.HasMemberData(a.Member.Dir) || etcd.HasMemberData(c.Member.Dir) {
		t.Errorf("member data: a %v, c %v; want only a's", etcd.HasMemberData(a.Member.Dir), etcd.HasMemberData(c.Member.Dir))
	}

	// Quorum is two of three: the cluster takes writes without its founder.
	founderSrv.Close()
	etcdtest.Eventually(t, 30*time.Second, canWrite(a.Member.ClientURL, b.Member.ClientURL),
		"a put through a and b after the founder stopped")

	// A member that restarts does so from its data (as `agent join` does
	// when it finds it), with no endpoint but its own: it is still one of
	// the three, and with b it has quorum.
	srvA.Close()
	startMember(t, a.Member)
	etcdtest.Eventually(t, 30*time.Second, canWrite(a.Member.ClientURL),
		"a put through a alone after it restarted from its data")
	if v := members(t, etcdtest.NewClient(t, a.Member.ClientURL)); !slices.Equal(v.names, []string{"a", "b", "founder"}) {
		t.Fatalf("members after a's restart = %+v", v)
	}
}

func TestConcurrentJoinersStopAtTheMembers(t *testing.T) {
	founder, _, cli := found(t, 3)
	var wg sync.WaitGroup
	got := make([]*etcd.Embedded, 4)
	js := make([]joiner, len(got))
	for i := range js {
		js[i] = newJoiner(t, string(rune('a'+i)), founder.ClientURL)
	}
	errs := make([]error, len(js))
	for i := range js {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			got[i], errs[i] = js[i].Join(ctx)
		})
	}
	wg.Wait()
	became := 0
	for i, srv := range got {
		if errs[i] != nil {
			t.Errorf("joiner %d: %v", i, errs[i])
		}
		if srv != nil {
			became++
			t.Cleanup(srv.Close)
		}
	}
	if v := members(t, cli); became != 2 || len(v.names) != 3 || v.total != 3 {
		t.Fatalf("%d of 4 concurrent joiners became members, members %+v; want 2 and 3 voting", became, v)
	}
}

func TestClustersTheAgentsDidNotStartDoNotGrow(t *testing.T) {
	t.Run("no growth key", func(t *testing.T) {
		srv := etcdtest.Start(t)
		j := newJoiner(t, "a", srv.Endpoint())
		if j.join(t) != nil {
			t.Fatal("became a member of an etcd the agents did not start")
		}
		if v := members(t, srv.Client()); v.total != 1 {
			t.Fatalf("members = %+v, want the one", v)
		}
	})
	t.Run("founded with members = 1", func(t *testing.T) {
		founder, _, cli := found(t, 1)
		if newJoiner(t, "a", founder.ClientURL).join(t) != nil {
			t.Fatal("became a member of a cluster that stays one member")
		}
		if v := members(t, cli); v.total != 1 {
			t.Fatalf("members = %+v, want the founder", v)
		}
	})
	t.Run("malformed growth key", func(t *testing.T) {
		founder, _, cli := found(t, 3)
		if _, err := cli.Put(context.Background(), etcd.GrowthKey(growPrefix), "three"); err != nil {
			t.Fatal(err)
		}
		j := newJoiner(t, "a", founder.ClientURL)
		_, err := j.Join(context.Background())
		if err == nil || !strings.Contains(err.Error(), etcd.GrowthKey(growPrefix)) || !strings.Contains(err.Error(), `"three"`) {
			t.Fatalf("Join = %v, want an error naming the key and its value", err)
		}
		if v := members(t, cli); v.total != 1 {
			t.Fatalf("members = %+v, want the founder", v)
		}
		// Run says so once, and goes on looking.
		j.run(t)
		etcdtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(j.log.String(), "malformed etcd growth") },
			"Run to log the malformed value")
		if err := etcd.SetGrowth(context.Background(), cli, growPrefix, etcd.Growth{Members: 3}); err != nil {
			t.Fatal(err)
		}
		etcdtest.Eventually(t, 60*time.Second, func() bool { return slices.Contains(members(t, cli).names, "a") },
			"a to become a member once the value is mended")
		if n := strings.Count(j.log.String(), "malformed etcd growth"); n != 1 {
			t.Errorf("the malformed value was logged %d times, want once:\n%s", n, j.log)
		}
	})
}

func TestMemberThatCannotStartIsRemovedAgain(t *testing.T) {
	founder, _, cli := found(t, 3)
	j := newJoiner(t, "a", founder.ClientURL)
	// Something else holds the client port the member should listen on.
	ln, err := net.Listen("tcp", strings.TrimPrefix(j.Member.ClientURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if j.join(t) != nil {
		t.Fatal("became a member although its client port is taken")
	}
	if v := members(t, cli); v.total != 1 || v.learners != 0 {
		t.Fatalf("members = %+v, want the founder alone (the learner removed again)", v)
	}
	if etcd.HasMemberData(j.Member.Dir) {
		t.Error("the failed member's data is left behind: the next start would run it")
	}
	if !strings.Contains(j.log.String(), "stays a client") {
		t.Errorf("log does not say the agent stays a client:\n%s", j.log)
	}
	ln.Close()
	if j.join(t) == nil {
		t.Fatalf("did not become a member once the port was free; log:\n%s", j.log)
	}
}

func TestLeftoverLearnerOfThisAgentIsReplaced(t *testing.T) {
	founder, _, cli := found(t, 3)
	j := newJoiner(t, "a", founder.ClientURL)
	// An earlier attempt added the learner and died before starting it.
	if _, err := cli.MemberAddAsLearner(context.Background(), []string{j.Member.PeerURL}); err != nil {
		t.Fatal(err)
	}
	if j.join(t) == nil {
		t.Fatalf("did not become a member; log:\n%s", j.log)
	}
	if v := members(t, cli); !slices.Equal(v.names, []string{"a", "founder"}) || v.total != 2 {
		t.Fatalf("members = %+v, want a and founder, no learner left", v)
	}
}

func TestRunKeepsTheClientAtTheMembers(t *testing.T) {
	founder, _, _ := found(t, 3)
	j := newJoiner(t, "a", founder.ClientURL)
	j.run(t)
	b := newJoiner(t, "b", founder.ClientURL)
	b.join(t)
	want := []string{b.Member.ClientURL, founder.ClientURL, j.Member.ClientURL}
	slices.Sort(want)
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		eps := slices.Clone(j.Client.Endpoints())
		slices.Sort(eps)
		return slices.Equal(eps, want)
	}, "the client's endpoints to become the three members' %v (have %v)", want, j.Client.Endpoints())
}

// A client agent running Run takes the place of a member that was removed
// (etcdctl member remove, after its host was lost), and says it stays a
// client once, not at every look.
func TestRunReplacesARemovedMember(t *testing.T) {
	founder, _, cli := found(t, 3)
	a, b := newJoiner(t, "a", founder.ClientURL), newJoiner(t, "b", founder.ClientURL)
	a.join(t)
	srvB := b.join(t)
	c := newJoiner(t, "c", founder.ClientURL)
	c.run(t)
	etcdtest.Eventually(t, 10*time.Second, func() bool { return strings.Count(c.log.String(), "etcd has its members") == 1 },
		"c to say once that it stays a client")

	var idB uint64
	for _, m := range mustMembers(t, cli) {
		if m.Name == "b" {
			idB = m.ID
		}
	}
	srvB.Close()
	if _, err := cli.MemberRemove(context.Background(), idB); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 90*time.Second, func() bool {
		v := members(t, cli)
		return slices.Equal(v.names, []string{"a", "c", "founder"}) && v.total == 3
	}, "c to take b's place")
	if n := strings.Count(c.log.String(), "etcd has its members"); n != 1 {
		t.Errorf("c said %d times that it stays a client; want once:\n%s", n, c.log)
	}
}

func mustMembers(t *testing.T, cli *clientv3.Client) []*etcdserverpb.Member {
	t.Helper()
	resp, err := cli.MemberList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Members
}

// An agent that started beside the founder, before it recorded the
// growth, becomes a member once it has.
func TestRunJoinsOnceTheGrowthIsRecorded(t *testing.T) {
	founder := memberConfig(t, "founder")
	startMember(t, founder)
	cli := etcdtest.NewClient(t, founder.ClientURL)
	j := newJoiner(t, "a", founder.ClientURL)
	j.run(t)
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		resp, err := j.Client.Get(context.Background(), etcd.GrowthKey(growPrefix))
		return err == nil && resp.Header.Revision > 0
	}, "the joiner's client to reach etcd")
	if err := etcd.SetGrowth(context.Background(), cli, growPrefix, etcd.Growth{Members: 3}); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return slices.Equal(members(t, cli).names, []string{"a", "founder"})
	}, "a to become a member once the growth is recorded")
}

// An agent with the name of a member on another peer URL is not added (two
// agents with one node name), and says why.
func TestJoinerWithATakenNameStaysAClient(t *testing.T) {
	founder, _, cli := found(t, 3)
	j := newJoiner(t, "founder", founder.ClientURL)
	if j.join(t) != nil {
		t.Fatal("an agent with the founder's name became a member")
	}
	if v := members(t, cli); v.total != 1 {
		t.Fatalf("members = %+v, want the founder alone", v)
	}
	if !strings.Contains(j.log.String(), "already has a member of this agent's name") {
		t.Errorf("log does not say why:\n%s", j.log)
	}
}

// A voting member that stays dead (its client URL silent, no agent of its
// name registered) for the founder's replace_dead_after is replaced by a
// client agent: the etcd has its members again, without anyone running
// etcdctl. A silent member whose agent is still registered is left alone.
func TestADeadMemberIsReplaced(t *testing.T) {
	founder, _, cli := found(t, 3)
	ctx := context.Background()
	if err := etcd.SetGrowth(ctx, cli, growPrefix, etcd.Growth{Members: 3, ReplaceDeadAfter: 1}); err != nil {
		t.Fatal(err)
	}
	a, b := newJoiner(t, "a", founder.ClientURL), newJoiner(t, "b", founder.ClientURL)
	a.join(t)
	srvB := b.join(t)
	if srvB == nil {
		t.Fatalf("b did not become a member:\n%s", b.log)
	}
	bRecord := etcd.NewKeys(growPrefix, "default").Member("b")
	if _, err := cli.Put(ctx, bRecord, `{"node":"b"}`); err != nil {
		t.Fatal(err)
	}
	srvB.Close()

	c := newJoiner(t, "c", founder.ClientURL)
	c.run(t)
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(c.log.String(), "an agent of its name is registered: not replacing it")
	}, "c to say that b's agent is still registered")
	if v := members(t, cli); !slices.Equal(v.names, []string{"a", "b", "founder"}) || v.total != 3 {
		t.Fatalf("members while b's agent is registered = %+v, want a, b and founder", v)
	}

	if _, err := cli.Delete(ctx, bRecord); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		v := members(t, cli)
		return slices.Equal(v.names, []string{"a", "c", "founder"}) && v.total == 3
	}, "c to take b's place: members %+v", poll.Latest(func() any { return members(t, cli) }))
	if !strings.Contains(c.log.String(), "removed a dead etcd member to take its place") {
		t.Errorf("c's log does not say it replaced b:\n%s", c.log)
	}
	etcdtest.Eventually(t, 30*time.Second, canWrite(c.Member.ClientURL), "a put through c's member")
}

// An agent whose member was removed while it was down (by etcdctl, or
// replaced by another agent) starts as a client with its old data set
// aside, instead of failing at every start; it can become a member again.
func TestARemovedMemberRestartsAsAClient(t *testing.T) {
	founder, _, cli := found(t, 3)
	a, b := newJoiner(t, "a", founder.ClientURL), newJoiner(t, "b", founder.ClientURL)
	srvA, srvB := a.join(t), b.join(t)
	if srvA == nil || srvB == nil {
		t.Fatalf("a and b did not become members:\n%s\n%s", a.log, b.log)
	}
	srvA.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		if m.Name == "a" {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
		}
	}

	srv, err := etcd.RestartMember(ctx, a.Member, etcd.ClientConfig{Endpoints: []string{founder.ClientURL}, DialTimeout: time.Second}, a.Logger)
	if srv != nil || err != nil {
		t.Fatalf("RestartMember of a removed member = %v, %v; want nil, nil (a client)", srv, err)
	}
	aside, _ := filepath.Glob(a.Member.Dir + ".removed-*")
	if etcd.HasMemberData(a.Member.Dir) || len(aside) != 1 || !etcd.HasMemberData(aside[0]) {
		t.Fatalf("member data left in place (%v) or not set aside (%v)", etcd.HasMemberData(a.Member.Dir), aside)
	}
	if !strings.Contains(a.log.String(), "its data is set aside and the agent goes on as a client") {
		t.Errorf("a's log does not say why it is a client:\n%s", a.log)
	}
	if a.join(t) == nil {
		t.Fatalf("a did not become a member again:\n%s", a.log)
	}
	if v := members(t, cli); !slices.Equal(v.names, []string{"a", "b", "founder"}) || v.total != 3 {
		t.Fatalf("members = %+v, want a, b and founder", v)
	}

	// A member that is still one but cannot start keeps its data and fails.
	srvB.Close()
	blocker := startMember(t, etcd.EmbedConfig{Name: "blocker", Dir: t.TempDir(), ClientURL: b.Member.ClientURL, PeerURL: "http://" + etcdtest.FreeAddr(t)})
	defer blocker.Close()
	if srv, err := etcd.RestartMember(ctx, b.Member, etcd.ClientConfig{Endpoints: []string{founder.ClientURL}, DialTimeout: time.Second}, b.Logger); srv != nil || err == nil {
		t.Fatalf("RestartMember of a member whose port is taken = %v, %v; want its error", srv, err)
	}
	if !etcd.HasMemberData(b.Member.Dir) {
		t.Fatal("the data of a member that is still one was set aside")
	}
}
