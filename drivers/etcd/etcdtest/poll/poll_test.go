package poll

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB that keeps the message of Fatalf and ends
// the goroutine, as the testing package's Fatalf does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// until runs Until on a recorder in its own goroutine and returns the
// failure message, "" when Until returned.
func until(timeout time.Duration, cond func() bool, format string, args ...any) string {
	r := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Until(r, timeout, cond, format, args...)
	}()
	<-done
	return r.msg
}

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	msg := until(time.Minute, func() bool { return calls.Add(1) == 3 }, "the third call")
	if msg != "" || calls.Load() != 3 {
		t.Fatalf("failed with %q after %d calls; want no failure after 3", msg, calls.Load())
	}
}

func TestUntilFailsAfterTheTimeoutNamingWhatWasAwaited(t *testing.T) {
	start := time.Now()
	var calls atomic.Int32
	msg := until(50*time.Millisecond, func() bool { calls.Add(1); return false }, "replica %d ready", 3)
	if want := "after 50ms: replica 3 ready"; msg != want {
		t.Fatalf("message %q, want %q", msg, want)
	}
	if elapsed := time.Since(start); elapsed < 50*time.Millisecond {
		t.Fatalf("failed after %s, before the timeout", elapsed)
	}
	if calls.Load() < 2 {
		t.Fatalf("cond called %d times in 50ms", calls.Load())
	}
}

func TestUntilCallsTheConditionOnceEvenWithoutTime(t *testing.T) {
	var calls atomic.Int32
	if msg := until(0, func() bool { return calls.Add(1) == 1 }, "at once"); msg != "" {
		t.Fatalf("failed with %q though the first call held", msg)
	}
}

// A Latest argument shows the state at the deadline, not at the start.
func TestUntilEvaluatesLatestWhenItFails(t *testing.T) {
	var calls atomic.Int32
	msg := until(30*time.Millisecond, func() bool { calls.Add(1); return false }, "%d calls, then %d", calls.Load(), Latest(func() any { return calls.Load() }))
	if want := fmt.Sprintf("after 30ms: 0 calls, then %d", calls.Load()); msg != want || calls.Load() < 2 {
		t.Fatalf("message %q, want %q (%d calls)", msg, want, calls.Load())
	}
}
