package relay

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentproj/agent/master/relay/remotewrite"
)

func statusOf(err error) int {
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) {
		return sc.StatusCode()
	}
	return 0
}

// Append goes through the same ingest as a remote-write request: external
// labels merged, refused when invalid, durable across a restart once it
// returned nil, and 503 while the relay does not run.
func TestAppendIsIngestedLikeARequest(t *testing.T) {
	up, bringUp := newDownManager(t)
	cfg := testConfig(t.TempDir(), up.URL)

	idleCfg := cfg
	idleCfg.QueueDir = t.TempDir()
	idle, err := New(idleCfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	wr := &remotewrite.WriteRequest{Timeseries: []remotewrite.TimeSeries{
		{Labels: []remotewrite.Label{{Name: "__name__", Value: "pushed"}, {Name: "ns", Value: "a"}}, Samples: []remotewrite.Sample{{Value: 1, Timestamp: 1000}}},
		{Labels: []remotewrite.Label{{Name: "__name__", Value: "pushed2"}}, Samples: []remotewrite.Sample{{Value: 2, Timestamp: 1000}}},
	}}
	if err := idle.Append(context.Background(), wr); statusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("Append before Run: %v, want a 503 error", err)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := idle.Run(ended); err != nil { // closes its queue
		t.Fatal(err)
	}

	r, stop := running(t, cfg)
	bad := &remotewrite.WriteRequest{Timeseries: []remotewrite.TimeSeries{
		{Labels: []remotewrite.Label{{Name: "bad\xffname", Value: "x"}}, Samples: []remotewrite.Sample{{Value: 1, Timestamp: 1}}},
	}}
	if err := r.Append(context.Background(), bad); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("Append of a label name that is not UTF-8: %v, want a 400 error", err)
	}
	if err := r.Append(context.Background(), wr); err != nil {
		t.Fatal(err)
	}
	stop() // acknowledged while the upstream is down: only the queue has it

	bringUp()
	running(t, cfg)
	waitFor(t, "appended series delivered after a restart", func() bool { return len(up.received()) >= 2 })
	got := up.received()
	if len(got) != 2 || names(got)["bad-name"] != 0 {
		t.Fatalf("upstream got %+v", got)
	}
	for _, ts := range got {
		if !hasLabel(ts.Labels, "cluster", "test") {
			t.Fatalf("external label missing: %+v", ts.Labels)
		}
	}
	if n := testutil.CollectAndCount(r.m.requests); n != 0 {
		t.Fatalf("Append counted as remote-write requests (%d series of relay_write_requests_total)", n)
	}
}

func hasLabel(ls []remotewrite.Label, name, value string) bool {
	for _, l := range ls {
		if l.Name == name && l.Value == value {
			return true
		}
	}
	return false
}
