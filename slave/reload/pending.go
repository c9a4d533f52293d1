package reload

import "sync"

// Pending is the latest config given to a running actor that its loop has
// not taken yet: Set from any goroutine, wait on Ready, Take in the loop.
// A Set replaces one not taken yet.
type Pending[C any] struct {
	mu    sync.Mutex
	next  *C
	ready chan struct{}
}

// NewPending returns an empty Pending.
func NewPending[C any]() *Pending[C] {
	return &Pending[C]{ready: make(chan struct{}, 1)}
}

// Set makes cfg the pending config and wakes Ready.
func (p *Pending[C]) Set(cfg C) {
	p.mu.Lock()
	p.next = &cfg
	p.mu.Unlock()
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

// Ready receives after a Set (once for several in a row).
func (p *Pending[C]) Ready() <-chan struct{} { return p.ready }

// Take returns the pending config and forgets it; ok is false when there
// is none.
func (p *Pending[C]) Take() (cfg C, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == nil {
		return cfg, false
	}
	cfg, p.next = *p.next, nil
	return cfg, true
}
