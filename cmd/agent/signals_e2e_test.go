package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/agentproj/agent/drivers/docker/dockertest"
	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/process/processtest"
	"github.com/agentproj/agent/master/collectors"
)

// guidAppImage builds testdata/guidapp (static) once per test and wraps it
// into a local image.
func guidAppImage(t *testing.T, c *dockerCluster, image string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "guidapp")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./testdata/guidapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the guid app: %v\n%s", err, out)
	}
	dockertest.ImportImage(t, c.cli, image, bin)
}

// masterOf waits until etcd names a master and returns it.
func masterOf(t *testing.T, endpoint string) string {
	t.Helper()
	var m string
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		if v := agentStatus(t, endpoint); v.Master != nil {
			m = v.Master.Node
		}
		return m != ""
	}, "no master")
	return m
}

// appSpan is one line of the guid app's log: a span it sent, and whether
// the trace agent took it.
type appSpan struct {
	seq      int
	trace    string
	accepted bool
	at       time.Time
}

var appSpanLine = regexp.MustCompile(`guidapp span seq=(\d+) trace=([0-9a-f]{32}) accepted=(true|false) tries=\d+ at=(\d+)`)

// appSpans reads the app container's log; none while it does not exist.
func appSpans(t *testing.T, c *dockerCluster, guid string) []appSpan {
	var out []appSpan
	if _, err := c.cli.ContainerInspect(t.Context(), guid); err != nil {
		return nil
	}
	for _, m := range appSpanLine.FindAllStringSubmatch(dockertest.Logs(t, c.cli, guid), -1) {
		seq, _ := strconv.Atoi(m[1])
		at, _ := strconv.ParseInt(m[4], 10, 64)
		out = append(out, appSpan{seq: seq, trace: m[2], accepted: m[3] == "true", at: time.Unix(0, at)})
	}
	return out
}

// The three signals of one guid application, end to end, with every part
// real: the app (a static Go program in a busybox-less image) runs in a
// container the agent starts on a real dockerd; it sends a span every
// 100 ms to its node's trace agent (the project's otelcol), which forwards
// to the master's Jaeger v2 collector, which forwards to the manager's
// Jaeger (query API on loopback); the app's stdout goes through the json-
// file log driver to the trace agent's file_log receiver and on to the
// manager's VictoriaLogs; its metrics go through the master's Prometheus
// and the relay to the manager's Prometheus. Then the master agent is
// killed with -9 and its collector dies with it (the host is gone): spans
// keep arriving through the new master's collector, and the test counts
// what, if anything, was lost.
func TestSignalsOfAGuidAppReachTheManager(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	jaeger := processtest.StartJaeger(t)
	logs := processtest.StartVictoriaLogs(t)
	c := startDockerClusterWith(t, "[api]\nallowed_images = [\"registry.local/*\"]\n", "otelcol",
		fmt.Sprintf("logs_url = %q\ntraces_otlp_endpoint = %q\n", logs.OTLPLogs, "http://"+jaeger.OTLPGRPC))
	const guid, image = "shop-7f3a", "registry.local/guidapp:1"
	guidAppImage(t, c, image)
	master := masterOf(t, c.endpoint)
	other := map[string]string{"a": "b", "b": "a"}[master]
	port := strings.Split(etcdtest.FreeAddr(t), ":")[1]
	// Pinned to the node that is not master, where it survives the master.
	spec := fmt.Sprintf(`{"guid":%q,"image":%q,"node":%q,"env":{"PORT":%q,"INTERVAL":"100ms"},"metrics":{"port":%s}}`, guid, image, other, port, port)
	if code, body := postApp(t, "http://"+c.agents[master].api, spec); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}

	// Traces: at the manager's Jaeger with the app's guid and service name,
	// and the node and cluster the trace agent added.
	var first map[string]string
	etcdtest.Eventually(t, 90*time.Second, func() bool {
		for _, s := range appSpans(t, c, guid) {
			if res := jaeger.Trace(s.trace); s.accepted && res != nil {
				first = res[0]
				return true
			}
		}
		return false
	}, "no span of %s at the manager's Jaeger", guid)
	if first["guid"] != guid || first["service.name"] != guid || first["node"] != other || first["cluster"] != "e2e" {
		t.Fatalf("span resource at the manager: %v", first)
	}
	// Logs: the app's stdout at the manager's VictoriaLogs, by guid.
	etcdtest.Eventually(t, 60*time.Second, func() bool { return len(logs.Query(`guid:"`+guid+`" "guidapp span"`)) > 0 },
		"no log line of %s at the manager's VictoriaLogs", guid)
	rec := logs.Query(`guid:"` + guid + `" "guidapp span"`)[0]
	if rec["node"] != other || rec["cluster"] != "e2e" || !strings.HasPrefix(rec["_msg"], "guidapp span seq=") {
		t.Fatalf("log record at the manager: %v", rec)
	}
	if n := len(logs.Query(`"guidapp span" -guid:"` + guid + `"`)); n != 0 {
		t.Fatalf("%d of the app's log lines reached the manager without its guid", n)
	}
	// Metrics: at the manager's Prometheus, through the relay, as before.
	series := fmt.Sprintf(`guidapp_spans_total{guid=%q,cluster="e2e",result="accepted"}`, guid)
	etcdtest.Eventually(t, 60*time.Second, func() bool { return query(c.manager, series) == 1 }, "app series with its guid did not reach the manager")
	// The collectors' own metrics (queues, drops) are scraped too.
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		return query(c.prom[master], `up{job="jaeger",cluster="e2e"} == 1`) == 1 && query(c.prom[master], `up{job="otelcol",cluster="e2e"} == 1`) == 2
	}, "the master's Prometheus does not scrape the Jaeger collector and both trace agents")

	// The master's host dies: kill -9 of its agent, and its collector
	// goes with it. The time the next collector URL appears in etcd is
	// what the loss is measured against.
	cli := etcdClient(t, c.endpoint)
	keys := etcd.NewKeys("/agent", "e2e")
	newURL := make(chan time.Time, 1)
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	var watching sync.WaitGroup
	watching.Go(func() {
		want := `"url":"http://` + c.ports[other].jaegerGRPC + `"`
		for wr := range cli.Watch(wctx, keys.Collector(collectors.JaegerOTLPGRPC)) {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut && strings.Contains(string(ev.Kv.Value), want) {
					newURL <- time.Now()
					return
				}
			}
		}
	})
	defer watching.Wait()
	killedAt := time.Now()
	c.agents[master].kill()
	if err := c.cli.ContainerRemove(t.Context(), "agent-jaeger-"+master, container.RemoveOptions{Force: true}); err != nil {
		t.Fatalf("kill the old master's collector: %v", err)
	}
	var appeared time.Time
	select {
	case appeared = <-newURL:
	case <-time.After(60 * time.Second):
		t.Fatalf("the new master %s did not publish its collector", other)
	}
	stopWatch()
	// Spans keep arriving through the new collector.
	var after []appSpan
	etcdtest.Eventually(t, 60*time.Second, func() bool {
		after = after[:0]
		for _, s := range appSpans(t, c, guid) {
			if s.accepted && s.at.After(appeared) {
				after = append(after, s)
			}
		}
		if len(after) < 50 {
			return false
		}
		n, _ := processtest.Metric("http://"+c.ports[other].t1+"/metrics", "otelcol_exporter_sent_spans", `exporter="otlp"`)
		return n >= 50
	}, "spans do not go through the new master's collector (%d sent after it appeared)", len(after))

	// Count, for every span the app sent until now, whether it is at the
	// manager: what was lost, and when it was sent.
	// Spans queued during the failover may still be on their way: wait
	// for them (at most 60 s, and 10 s once every span sent after the new
	// URL is there), then count.
	spans := appSpans(t, c, guid)
	var lost, refused []appSpan
	lostAfter := 0
	var settled time.Time
	for deadline := time.Now().Add(60 * time.Second); ; {
		have := jaeger.Traces(guid)
		lost, refused, lostAfter = lost[:0], refused[:0], 0
		for _, s := range spans {
			switch {
			case !s.accepted:
				refused = append(refused, s)
			case have[s.trace] == nil:
				lost = append(lost, s)
				if s.at.After(appeared) {
					lostAfter++
				}
			}
		}
		if lostAfter == 0 && settled.IsZero() {
			settled = time.Now()
		}
		if len(lost) == 0 || time.Now().After(deadline) || (!settled.IsZero() && time.Since(settled) > 10*time.Second) {
			break
		}
		time.Sleep(500 * time.Millisecond) // poll the manager's Jaeger
	}
	report := func(list []appSpan) string {
		sort.Slice(list, func(i, j int) bool { return list[i].seq < list[j].seq })
		var b strings.Builder
		for _, s := range list {
			fmt.Fprintf(&b, " seq %d (%+.1fs after the kill)", s.seq, s.at.Sub(killedAt).Seconds())
		}
		return b.String()
	}
	t.Logf("failover: new collector URL %.1fs after kill -9; %d spans sent, %d refused by the trace agent (the app gave up after 5 s):%s; %d accepted and lost:%s",
		appeared.Sub(killedAt).Seconds(), len(spans), len(refused), report(refused), len(lost), report(lost))
	if lostAfter > 0 {
		t.Fatalf("spans accepted after the new collector URL appeared were lost:%s", report(lost))
	}
}
