// Package etcdtest runs a real embedded etcd server for tests, on free
// loopback ports with its data under t.TempDir(). It is the real server, not
// a fake, and it can be stopped and started again on the same ports and data
// to simulate an outage.
package etcdtest

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/freeaddr"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
)

// ClientLeaks are goroutines of the etcd client that outlive a test by
// design (its gRPC resolver and zap sinks): the options for
// goleak.VerifyTestMain in a package whose tests use a client.
func ClientLeaks() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	}
}

// Server is an embedded etcd for one test.
type Server struct {
	t   testing.TB
	cfg etcd.EmbedConfig
	srv *etcd.Embedded
}

// Start starts a server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	client, peer := FreeAddr(t), FreeAddr(t)
	s := &Server{t: t, cfg: etcd.EmbedConfig{
		Name:      "test",
		Dir:       t.TempDir(),
		ClientURL: "http://" + client,
		PeerURL:   "http://" + peer,
	}}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string { return s.cfg.ClientURL }

// Stop stops the server; Restart brings it back with the same data.
func (s *Server) Stop() {
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

// Restart starts the server again on the same ports and data.
func (s *Server) Restart() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcd.StartEmbedded(ctx, s.cfg)
	if err != nil {
		s.t.Fatalf("start embedded etcd: %v", err)
	}
	s.srv = srv
}

// Wipe stops the server, deletes its data and starts it again on the same
// name and ports: an etcd restored empty. Its cluster ID stays the same
// (etcd derives it from the member names and peer URLs) while its revisions
// start again from 1.
func (s *Server) Wipe() {
	s.t.Helper()
	s.Stop()
	if err := os.RemoveAll(s.cfg.Dir); err != nil {
		s.t.Fatalf("wipe etcd data: %v", err)
	}
	s.Restart()
}

// Client returns a client for the server, closed when the test ends.
func (s *Server) Client() *clientv3.Client {
	s.t.Helper()
	return s.ClientVia(s.Endpoint())
}

// ClientVia returns a client that reaches the server through endpoint (a
// Proxy's), closed when the test ends.
func (s *Server) ClientVia(endpoint string) *clientv3.Client {
	s.t.Helper()
	return NewClient(s.t, endpoint)
}

// NewClient returns a client for endpoint, closed when the test ends.
func NewClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := etcd.NewClient(etcd.ClientConfig{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Eventually polls cond until it is true or timeout passes, then fails the
// test with msg (poll.Until, which tests that must not link etcd call
// directly).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	poll.Until(t, timeout, cond, msg, args...)
}

// Campaign wins a term for node under keys' election prefix, on a new
// session with the given TTL (seconds) that is closed when the test ends.
// It blocks while an earlier term is alive.
func Campaign(t testing.TB, cli *clientv3.Client, keys etcd.Keys, node string, ttl int) (*concurrency.Session, etcd.Leader) {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	e := concurrency.NewElection(s, keys.Election())
	if err := e.Campaign(context.Background(), node); err != nil {
		t.Fatalf("campaign: %v", err)
	}
	return s, etcd.Leader{Node: node, Key: e.Key(), Rev: e.Rev(), ClusterID: e.Header().ClusterId, Lease: s.Lease(), KV: cli}
}

// FreeAddr returns a loopback host:port reserved for the test until it
// ends, across every test process on the machine (freeaddr.Reserve).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeaddr.Reserve(t)
}
