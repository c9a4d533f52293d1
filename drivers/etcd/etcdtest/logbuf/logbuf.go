// Package logbuf is a log sink that tests read while the code under test
// writes to it from other goroutines. It imports nothing of the project,
// so that the tests of any package can use it without an import cycle.
package logbuf

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that is safe for concurrent use: hand it to
// slog.NewTextHandler and read String while the writer runs (for example
// to poll for a log line). The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it never fails.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
