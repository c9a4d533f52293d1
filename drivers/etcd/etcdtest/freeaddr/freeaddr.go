// Package freeaddr reserves loopback ports for tests across every test
// process on the machine. It imports nothing of the project, so that any
// test helper can use it (etcdtest.FreeAddr is it; processtest, which
// stackconfig's tests import, calls it directly; kubetest's shared API
// holds its ports with Acquire).
package freeaddr

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// portsDir holds one lock file per port a test has reserved, for every
// test process on this machine whatever its TMPDIR: /tmp is the one
// folder they all share.
var portsDir = filepath.Join("/tmp", "agent-test-ports")

// Reserve returns a loopback host:port reserved for the test until it
// ends: no Reserve or Acquire of any test process on this machine returns
// it meanwhile, and it lies below the kernel's ephemeral port range, so
// that no listener on port 0 (httptest servers, a Jaeger's spare gRPC
// port) and no outgoing connection takes it between this call and the
// bind of the program the test hands it to. A port picked by listening on
// port 0 and closing the probe raced with all of these: two calls could
// return one port, and a process started seconds later found it taken
// (Prometheus exits 1 on "bind: address already in use").
func Reserve(t testing.TB) string {
	t.Helper()
	addr, release, err := Acquire()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	t.Cleanup(release)
	return addr
}

// Acquire is Reserve without a test: for a server that outlives any one
// test (one shared by the tests of a test process, started from TestMain
// or on first use). The port stays reserved until release is called,
// which the caller does once the program it handed the port to has
// stopped, or until the process dies.
//
// The reservation is an flock on <portsDir>/<port>, held through an open
// file until release closes it; the kernel drops it when the process
// dies. The port was free when reserved (a probe listened on it).
func Acquire() (addr string, release func(), err error) {
	lo, hi := reservedRange()
	if lo >= hi {
		addr, err := anyFreeAddr()
		return addr, func() {}, err
	}
	if err := os.MkdirAll(portsDir, 0o777); err != nil {
		return "", nil, err
	}
	_ = os.Chmod(portsDir, 0o1777) // other users' tests reserve there too
	for range 500 {
		port := lo + rand.IntN(hi-lo)
		f, err := os.OpenFile(filepath.Join(portsDir, strconv.Itoa(port)), os.O_RDONLY|os.O_CREATE, 0o444)
		if err != nil {
			continue // another user's file we may not open: taken
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close() // reserved by another test, in this process or another
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			f.Close() // bound by a program that does not reserve
			continue
		}
		ln.Close()
		var once sync.Once
		return addr, func() { once.Do(func() { f.Close() }) }, nil // closing drops the lock
	}
	return "", nil, fmt.Errorf("no free port in %d..%d after 500 tries", lo, hi-1)
}

// reservedRange is where Reserve picks: from 20000 (above the project's
// default ports) to the start of the ephemeral range, [lo, hi); empty when
// the ephemeral range leaves too little room below it.
func reservedRange() (lo, hi int) {
	const from, least = 20000, 1000
	ephemeral := 32768 // Linux's default start
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				ephemeral = n
			}
		}
	}
	if ephemeral-from < least {
		return 0, 0
	}
	return from, ephemeral
}

// anyFreeAddr is the fallback where no port range is free of the
// kernel's: a port free a moment ago, without a reservation.
func anyFreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
