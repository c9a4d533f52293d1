package reload

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// actor runs until its context ends and records that it did.
type actor struct {
	cfg              string
	running, stopped atomic.Bool
}

func (a *actor) Run(ctx context.Context) error {
	a.running.Store(true)
	<-ctx.Done()
	a.stopped.Store(true)
	return nil
}

// An equal config keeps the actor; another replaces it, the previous one
// stopped and released before the next is built; a config build refuses
// brings the previous one back.
func TestSwap(t *testing.T) {
	var builds, releases atomic.Int32
	var last atomic.Pointer[actor]
	build := func(cfg string) (*actor, error) {
		if cfg == "bad" {
			return nil, errors.New("refused")
		}
		if prev := last.Load(); prev != nil && !prev.stopped.Load() {
			t.Errorf("%s built while %s still runs", cfg, prev.cfg)
		}
		builds.Add(1)
		a := &actor{cfg: cfg}
		last.Store(a)
		return a, nil
	}
	s, err := New("one", build, func(*actor) { releases.Add(1) }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	current := func(cfg string) func() bool {
		return func() bool { a := s.Current(); return a.cfg == cfg && a.running.Load() }
	}
	poll.Until(t, 10*time.Second, current("one"), "the first actor not running")

	s.Reload("one")
	s.Reload("two")
	poll.Until(t, 10*time.Second, current("two"), "not replaced by two")
	s.Reload("bad")
	poll.Until(t, 10*time.Second, func() bool { return current("two")() && builds.Load() == 3 }, "two not built again after a refused config: %d builds", poll.Latest(func() any { return builds.Load() }))
	if got := releases.Load(); got != 2 {
		t.Fatalf("%d releases, want one per replaced actor (2)", got)
	}
	cancel()
	if err := <-done; err != nil || !s.Current().stopped.Load() {
		t.Fatalf("Run at the end: %v, actor stopped %v", err, s.Current().stopped.Load())
	}
}

// Two Sets before the loop looks: one wake-up, the latest config, once.
func TestPending(t *testing.T) {
	p := NewPending[int]()
	if _, ok := p.Take(); ok {
		t.Fatal("an empty Pending gave a config")
	}
	p.Set(1)
	p.Set(2)
	<-p.Ready()
	select {
	case <-p.Ready():
		t.Fatal("two wake-ups for two Sets in a row")
	default:
	}
	if v, ok := p.Take(); !ok || v != 2 {
		t.Fatalf("Take = %d, %v; want 2, true", v, ok)
	}
	if _, ok := p.Take(); ok {
		t.Fatal("a config taken twice")
	}
}
