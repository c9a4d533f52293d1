package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/master/relay/remotewrite"
	"github.com/agentproj/agent/stackconfig"
)

// Service runs a Relay and replaces it with one built from a reloaded
// [relay] (SIGHUP): the running relay stops as at a shutdown (everything it
// acknowledged is in the queue on disk; a request under way upstream is
// sent again), and the new one opens the same queue, so what was queued is
// delivered by the new configuration's upstreams and shards exactly as
// after a restart (an upstream that went loses what it had not received, a
// new one starts with new data, a change of concurrency keeps every series
// in order). While the two change places, writes are answered 503, which
// senders retry. The relay's counters start again from zero.
type Service struct {
	logger *slog.Logger
	reg    prometheus.Registerer
	cur    atomic.Pointer[Relay]

	mu    sync.Mutex
	next  *stackconfig.Relay
	nudge chan struct{}
}

// Interface guards: the Service stands wherever a Relay is used.
var (
	_ http.Handler = (*Service)(nil)
	_ interface {
		Append(context.Context, *remotewrite.WriteRequest) error
	} = (*Service)(nil)
)

// NewService builds the first relay from cfg (see New).
func NewService(cfg stackconfig.Relay, logger *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	r, err := New(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	s := &Service{logger: logger, reg: reg, nudge: make(chan struct{}, 1)}
	s.cur.Store(r)
	return s, nil
}

// ServeHTTP is the current relay's.
func (s *Service) ServeHTTP(w http.ResponseWriter, req *http.Request) { s.cur.Load().ServeHTTP(w, req) }

// Append is the current relay's.
func (s *Service) Append(ctx context.Context, wr *remotewrite.WriteRequest) error {
	return s.cur.Load().Append(ctx, wr)
}

// Stats are the current relay's.
func (s *Service) Stats() Stats { return s.cur.Load().Stats() }

// Reload has Run replace the relay with one built from cfg (already
// validated, as New wants it), unless cfg is what runs.
func (s *Service) Reload(cfg stackconfig.Relay) {
	s.mu.Lock()
	s.next = &cfg
	s.mu.Unlock()
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// Run runs the current relay until ctx ends, replacing it on Reload. A
// config New refuses (the queue cannot be opened, say) is logged and the
// previous one opened again.
func (s *Service) Run(ctx context.Context) error {
	for {
		r := s.cur.Load()
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		cfg, err := s.wait(done, r.cfg)
		stop()
		if cfg == nil { // ctx ended, or the relay failed
			return err
		}
		if err := <-done; err != nil {
			return err
		}
		r.unregister()
		n, err := New(*cfg, s.logger, s.reg)
		if err != nil {
			s.logger.Error("reloaded relay config rejected, opening the previous one again", "err", err)
			if n, err = New(r.cfg, s.logger, s.reg); err != nil {
				return fmt.Errorf("reopen relay: %w", err)
			}
		} else {
			s.logger.Info("relay reloaded", "upstreams", len(cfg.Upstream), "shards", cfg.Concurrency)
		}
		s.cur.Store(n)
	}
}

// wait returns a reloaded config that differs from running, or nil and
// the relay's error once it has stopped.
func (s *Service) wait(done <-chan error, running stackconfig.Relay) (*stackconfig.Relay, error) {
	for {
		select {
		case err := <-done:
			return nil, err
		case <-s.nudge:
		}
		s.mu.Lock()
		next := s.next
		s.next = nil
		s.mu.Unlock()
		if next != nil && !reflect.DeepEqual(*next, running) {
			return next, nil
		}
	}
}
