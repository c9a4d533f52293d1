package master

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentproj/agent/drivers/etcd"
)

type dutyFunc func(ctx context.Context, lead etcd.Leader) error

func (f dutyFunc) Run(ctx context.Context, lead etcd.Leader) error { return f(ctx, lead) }

func TestFencedDutyEndsEveryDuty(t *testing.T) {
	stopped := make(chan struct{})
	d := Duties{
		{"waits", dutyFunc(func(ctx context.Context, _ etcd.Leader) error {
			<-ctx.Done()
			close(stopped)
			return nil
		})},
		{"fenced", dutyFunc(func(context.Context, etcd.Leader) error { return etcd.ErrFenced })},
	}
	err := d.Run(context.Background(), etcd.Leader{})
	if !errors.Is(err, etcd.ErrFenced) || err.Error() != "fenced: "+etcd.ErrFenced.Error() {
		t.Fatalf("Run = %v, want the fenced duty's error, named", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Run returned before the other duty stopped")
	}
}

func TestDutiesRunUntilTermEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Duties{}.Run(ctx, etcd.Leader{}) }()
	select {
	case err := <-done:
		t.Fatalf("no duties: Run returned %v before the term ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after the term ended = %v", err)
	}
}
