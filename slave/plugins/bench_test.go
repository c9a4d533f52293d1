package plugins

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/stackconfig"
)

func rusage(b *testing.B, who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPluginRun measures what one run of a small plugin (a shell
// script printing 20 samples in the text format) costs the agent: fork and
// exec with a new process group, reading and parsing the output, and
// appending the samples to a real relay (fdatasync) that forwards to an
// upstream that discards. It reports the agent's own CPU per run
// (agent-cpu-ms/run) apart from the plugin's (plugin-cpu-ms/run).
func BenchmarkPluginRun(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	cfg := stackconfig.DefaultRelay
	cfg.Upstream = []stackconfig.RelayUpstream{{URL: up.URL}}
	rel, err := relay.New(cfg.WithAgentDefaults("c1", b.TempDir()), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdone := make(chan error, 1)
	go func() { rdone <- rel.Run(ctx) }()

	body := "i=0\nwhile [ $i -lt 20 ]; do echo \"bench_value{disk=\\\"d$i\\\"} $i\"; i=$((i+1)); done\n"
	path := script(b, b.TempDir(), "bench.sh", body)
	m, err := New(Config{Node: "n1", Cluster: "c1", Dir: b.TempDir(), Plugins: []stackconfig.Plugin{{Name: "bench", Command: []string{path}}}},
		rel, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(context.Background())
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(mctx) }()
	for {
		res, err := m.RunNow(context.Background(), "bench", 0, nil)
		if err == nil && res.Stored {
			break // the manager and the relay run
		}
		time.Sleep(time.Millisecond)
	}
	self0, kids0 := rusage(b, syscall.RUSAGE_SELF), rusage(b, syscall.RUSAGE_CHILDREN)
	b.ResetTimer()
	for range b.N {
		res, err := m.RunNow(context.Background(), "bench", 0, nil)
		if err != nil || res.Error != "" || res.Samples != 20 || !res.Stored {
			b.Fatalf("run: %+v %v", res, err)
		}
	}
	b.StopTimer()
	self, kids := rusage(b, syscall.RUSAGE_SELF)-self0, rusage(b, syscall.RUSAGE_CHILDREN)-kids0
	b.ReportMetric(self.Seconds()*1000/float64(b.N), "agent-cpu-ms/run")
	b.ReportMetric(kids.Seconds()*1000/float64(b.N), "plugin-cpu-ms/run")
	mcancel()
	<-mdone
	cancel()
	if err := <-rdone; err != nil {
		b.Error(err)
	}
}
