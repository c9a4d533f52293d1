package freeaddr

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// lockedElsewhere reports whether port's reservation is held: an flock
// through a new open file conflicts with it, from this process as from
// any other.
func lockedElsewhere(t *testing.T, port string) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(portsDir, port))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	return err != nil
}

// Reserve hands out each port once while a test holds it, below the
// ephemeral range (where port-0 listeners and outgoing connections never
// land), and holds the reservation until the test ends.
func TestReserveHandsOutDistinctPortsOutsideTheEphemeralRange(t *testing.T) {
	lo, hi := reservedRange()
	if lo >= hi {
		t.Skip("no room below this machine's ephemeral port range")
	}
	var held []string
	t.Run("reserve", func(t *testing.T) {
		seen := map[string]bool{}
		for range 200 {
			addr := Reserve(t)
			host, port, err := net.SplitHostPort(addr)
			if err != nil || host != "127.0.0.1" {
				t.Fatalf("FreeAddr = %q", addr)
			}
			if seen[port] {
				t.Fatalf("port %s handed out twice", port)
			}
			seen[port] = true
			if n, _ := strconv.Atoi(port); n < lo || n >= hi {
				t.Fatalf("port %d outside %d..%d", n, lo, hi-1)
			}
			held = append(held, port)
		}
		if !lockedElsewhere(t, held[0]) {
			t.Fatal("a port's reservation is not held while its test runs")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+held[0])
		if err != nil {
			t.Fatalf("the reserved port cannot be bound by the program it is for: %v", err)
		}
		ln.Close()
	})
	if lockedElsewhere(t, held[0]) {
		t.Fatal("the reservation outlived its test")
	}
}

// Acquire holds its reservation, without a test, until release is called:
// Reserve never hands the port out meanwhile, and a second release is
// harmless.
func TestAcquireHoldsThePortUntilReleased(t *testing.T) {
	if lo, hi := reservedRange(); lo >= hi {
		t.Skip("no room below this machine's ephemeral port range")
	}
	addr, release, err := Acquire()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	t.Run("reserve", func(t *testing.T) {
		for range 200 {
			if got := Reserve(t); got == addr {
				t.Fatalf("Reserve handed out %s, which Acquire holds", addr)
			}
		}
	})
	if !lockedElsewhere(t, port) {
		t.Fatal("Acquire's reservation is not held after a test ended")
	}
	release()
	release()
	if lockedElsewhere(t, port) {
		t.Fatal("the reservation outlived its release")
	}
}
