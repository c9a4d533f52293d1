package etcd_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest"
)

// The endpoints the client follows in a growing etcd are kept in the file,
// and read back without the agent's own URL; a missing file is none, a bad
// one an error that names it.
func TestEndpointsAreKeptForTheNextStart(t *testing.T) {
	cfg, _, cli := found(t, 3)
	file := filepath.Join(t.TempDir(), etcd.EndpointsFile)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := etcd.SyncEndpoints(ctx, cli, growPrefix, file, 20*time.Millisecond, slog.New(slog.DiscardHandler)); err != nil {
			t.Errorf("SyncEndpoints: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	var got []string
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		got, _ = etcd.RememberedEndpoints(file, "http://127.0.0.1:1")
		return slices.Equal(got, []string{cfg.ClientURL})
	}, "the file keeps %v, want [%s]", &got, cfg.ClientURL)
	if got, err := etcd.RememberedEndpoints(file, cfg.ClientURL); err != nil || len(got) != 0 {
		t.Fatalf("RememberedEndpoints without its own URL = %v, %v; want none", got, err)
	}

	if got, err := etcd.RememberedEndpoints(filepath.Join(t.TempDir(), "none.json"), ""); err != nil || got != nil {
		t.Fatalf("RememberedEndpoints of a missing file = %v, %v; want none", got, err)
	}
	bad := filepath.Join(t.TempDir(), etcd.EndpointsFile)
	if err := os.WriteFile(bad, []byte("http://10.0.0.1:2379\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := etcd.RememberedEndpoints(bad, ""); err == nil || !strings.Contains(err.Error(), bad+": not a list of etcd client URLs") {
		t.Fatalf("RememberedEndpoints of a bad file: %v, want an error naming it", err)
	}
}
