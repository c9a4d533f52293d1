// Command agent is the etcd-coordinated cluster agent: every host runs
// `agent join`; the agents elect a master that runs the cluster stack.
//
// This package only parses the command line and wires the actors of the
// other packages together; behaviour lives in slave/, master/, drivers/ and
// stackconfig/.
package main

import (
	"errors"
	"fmt"
	"os"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// exitCode carries a specific process exit code through cobra.
type exitCode struct {
	code int
	err  error
}

func (e exitCode) Error() string { return e.err.Error() }
func (e exitCode) Unwrap() error { return e.err }

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "agent:", err)
	var ec exitCode
	if errors.As(err, &ec) {
		os.Exit(ec.code)
	}
	os.Exit(1)
}
