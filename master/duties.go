package master

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/agentproj/agent/drivers/etcd"
)

// Duty is one thing the master does for a term. Run blocks until ctx ends;
// an error (etcd.ErrFenced above all) ends the whole term.
type Duty interface {
	Run(ctx context.Context, lead etcd.Leader) error
}

// Named gives a duty a name for error messages.
type Named struct {
	Name string
	Duty
}

// Duties runs every duty for the length of a term.
type Duties []Named

// Run starts every duty and returns when ctx ends or the first duty fails;
// in both cases it waits for all of them to return.
func (d Duties) Run(ctx context.Context, lead etcd.Leader) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, duty := range d {
		g.Go(func() error {
			if err := duty.Run(gctx, lead); err != nil && gctx.Err() == nil {
				return fmt.Errorf("%s: %w", duty.Name, err)
			}
			return nil
		})
	}
	g.Go(func() error { <-gctx.Done(); return nil })
	return g.Wait()
}
