// Package reload hands a reloaded config (the agent's SIGHUP) to running
// actors: Pending to one that applies it in its own loop (the stacks, the
// monitor), and Swap to replace an actor with one built from it, for
// actors that own something only one of them may hold at a time (the
// relay's queue directory, the plugins' schedules and metrics): the
// running one is stopped first, as at a shutdown, then the next is built.
package reload

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync/atomic"
)

// Actor is what a Swap runs.
type Actor interface {
	Run(ctx context.Context) error
}

// Swap runs the actor built from the current config and replaces it when
// Reload gives another one.
type Swap[C any, A Actor] struct {
	build   func(C) (A, error)
	release func(A) // after the actor stopped, before the next is built
	log     *slog.Logger
	cur     atomic.Pointer[running[C, A]]
	next    *Pending[C]
}

type running[C any, A Actor] struct {
	cfg   C
	actor A
}

// New builds the first actor from cfg. release (may be nil) undoes what
// build did beside the actor (registered metrics) once the actor has
// stopped.
func New[C any, A Actor](cfg C, build func(C) (A, error), release func(A), log *slog.Logger) (*Swap[C, A], error) {
	a, err := build(cfg)
	if err != nil {
		return nil, err
	}
	s := &Swap[C, A]{build: build, release: release, log: log, next: NewPending[C]()}
	s.cur.Store(&running[C, A]{cfg, a})
	return s, nil
}

// Current is the actor that runs, or ran last (it answers as stopped
// while it is being replaced).
func (s *Swap[C, A]) Current() A { return s.cur.Load().actor }

// Reload has Run replace the actor with one built from cfg, unless cfg
// is what runs.
func (s *Swap[C, A]) Reload(cfg C) { s.next.Set(cfg) }

// Run runs the current actor until ctx ends, replacing it after Reload. A
// config build refuses is logged and the previous one built again; Run
// fails only when that fails too.
func (s *Swap[C, A]) Run(ctx context.Context) error {
	for {
		cur := s.cur.Load()
		actx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cur.actor.Run(actx) }()
		cfg, err := s.wait(done, cur.cfg)
		stop()
		if cfg == nil { // ctx ended, or the actor failed
			return err
		}
		if err := <-done; err != nil {
			return err
		}
		if s.release != nil {
			s.release(cur.actor)
		}
		a, err := s.build(*cfg)
		if err != nil {
			s.log.Error("reloaded config rejected, starting the previous one again", "err", err)
			cfg = &cur.cfg
			if a, err = s.build(*cfg); err != nil {
				return fmt.Errorf("start the previous config again: %w", err)
			}
		} else {
			s.log.Info("reloaded")
		}
		s.cur.Store(&running[C, A]{*cfg, a})
	}
}

// wait returns a config Reload gave that differs from running, or nil and
// the actor's error once it has stopped.
func (s *Swap[C, A]) wait(done <-chan error, running C) (*C, error) {
	for {
		select {
		case err := <-done:
			return nil, err
		case <-s.next.Ready():
		}
		if next, ok := s.next.Take(); ok && !reflect.DeepEqual(next, running) {
			return &next, nil
		}
	}
}
