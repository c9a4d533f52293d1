// Package relaytest runs a real relay for the tests of its clients (the
// push handler, plugins), in-process, with a remote-write receiver that
// stands for the manager on the relay's other side.
package relaytest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay"
	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// Upstream is a remote-write 1.0 receiver that keeps the series of every
// request it accepts (204) and refuses one it cannot decode (400).
type Upstream struct {
	*httptest.Server
	mu     sync.Mutex
	series []remotewrite.TimeSeries
}

// NewUpstream starts an Upstream and closes it when the test ends.
func NewUpstream(t testing.TB) *Upstream {
	t.Helper()
	u := &Upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		dec, err := remotewrite.Decode(nil, body, 64<<20)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		wr, err := remotewrite.Unmarshal(dec)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u.mu.Lock()
		u.series = append(u.series, wr.Timeseries...)
		u.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(u.Close)
	return u
}

// Series returns the series received so far, in the order they came.
func (u *Upstream) Series() []remotewrite.TimeSeries {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.series)
}

// Start runs a relay of cluster c1 with the default config, forwarding to
// upstream at once (no flush deadline), with its queue under the test's
// temporary directory. It stops when the test ends, and the test fails if
// Run returns an error.
func Start(t testing.TB, upstream string) *relay.Relay {
	t.Helper()
	cfg := stackconfig.DefaultRelay
	cfg.Upstream = []stackconfig.RelayUpstream{{URL: upstream}}
	cfg.FlushDeadline = 0
	r, err := relay.New(cfg.WithAgentDefaults("c1", t.TempDir()), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return r
}
