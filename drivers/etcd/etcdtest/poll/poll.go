// Package poll waits in a test for a condition that something else makes
// true, with a deadline instead of a sleep. It imports nothing of the
// project, so that the tests and test helpers of any package can use it
// without an import cycle or linking etcd (etcdtest.Eventually is Until).
package poll

import (
	"fmt"
	"testing"
	"time"
)

// Interval is how long Until waits between two calls of its condition.
const Interval = 10 * time.Millisecond

// Latest is an argument of Until's message that is evaluated when Until
// fails, not when it is called: the state at the deadline, such as
// poll.Latest(func() any { return sup.States() }).
type Latest func() any

// Until calls cond every Interval until it returns true. If timeout passes
// first, it fails the test with "after <timeout>: " and the message, which
// names what was awaited (format and args as in fmt.Sprintf, evaluated when
// Until is called, except a Latest, evaluated when it fails). It fails only after a call of cond that returned
// false has ended past the deadline, so cond is always called at least
// once.
func Until(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			now := make([]any, len(args))
			for i, a := range args {
				if f, ok := a.(Latest); ok {
					a = f()
				}
				now[i] = a
			}
			t.Fatalf("after %s: %s", timeout, fmt.Sprintf(format, now...))
		}
		time.Sleep(Interval)
	}
}
