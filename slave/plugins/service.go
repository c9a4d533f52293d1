package plugins

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Service runs a Manager and replaces it with one built from a reloaded
// [[plugins]] (SIGHUP). The running manager stops as at a shutdown (runs
// under way are killed; a disabled plugin stays disabled, its state is on
// disk), and the new one starts its schedules at once. A list New refuses
// (a user that does not exist, say) is logged and the previous one started
// again. The plugins' counters start again from zero.
type Service struct {
	app Appender
	log *slog.Logger
	reg prometheus.Registerer
	cur atomic.Pointer[Manager]

	mu    sync.Mutex
	next  *Config
	nudge chan struct{}
}

// NewService builds the first manager from cfg (see New).
func NewService(cfg Config, app Appender, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	m, err := New(cfg, app, log, reg)
	if err != nil {
		return nil, err
	}
	s := &Service{app: app, log: log, reg: reg, nudge: make(chan struct{}, 1)}
	s.cur.Store(m)
	return s, nil
}

// Reload has Run replace the manager with one built from cfg, unless cfg
// is what runs.
func (s *Service) Reload(cfg Config) {
	s.mu.Lock()
	s.next = &cfg
	s.mu.Unlock()
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// Routes are the plugin API's handlers (Manager.Routes) of the current
// manager.
func (s *Service) Routes() map[string]http.Handler {
	routes := map[string]http.Handler{}
	for pattern := range s.cur.Load().Routes() {
		routes[pattern] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.cur.Load().Routes()[pattern].ServeHTTP(w, r)
		})
	}
	return routes
}

// Run runs the current manager until ctx ends, replacing it on Reload.
func (s *Service) Run(ctx context.Context) error {
	for {
		m := s.cur.Load()
		mctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- m.Run(mctx) }()
		cfg, err := s.wait(done, m.cfg)
		stop()
		if cfg == nil {
			return err
		}
		if err := <-done; err != nil {
			return err
		}
		if s.reg != nil {
			m.m.unregister(s.reg)
		}
		n, err := New(*cfg, s.app, s.log, s.reg)
		if err != nil {
			s.log.Error("reloaded plugins rejected, starting the previous ones again", "err", err)
			if n, err = New(m.cfg, s.app, s.log, s.reg); err != nil {
				return fmt.Errorf("restart plugins: %w", err)
			}
		} else {
			s.log.Info("plugins reloaded", "plugins", len(cfg.Plugins))
		}
		s.cur.Store(n)
	}
}

// wait returns a reloaded config that differs from running, or nil and
// the manager's error once it has stopped.
func (s *Service) wait(done <-chan error, running Config) (*Config, error) {
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
