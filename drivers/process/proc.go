package process

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// procStat is what /proc/<pid>/stat tells about a process.
type procStat struct {
	state      byte   // R, S, D, Z, X, ...
	startTicks uint64 // clock ticks after boot; with the pid, unique
}

// readStat reads /proc/<pid>/stat; a process that does not exist is
// os.ErrNotExist.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may hold anything,
	// so the fields after it are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return procStat{state: f[0][0], startTicks: ticks}, nil
}

// runs reports whether /proc/<pid>/cmdline shows binary: as its first
// word, or, when binary is a script, as one of the two words after its
// interpreter (the kernel runs a "#!/bin/sh -e" script as
// /bin/sh -e <script> ...).
func runs(pid int, binary string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	words := bytes.SplitN(b, []byte{0}, 4)
	if string(words[0]) == binary {
		return true
	}
	if len(words) < 2 || !isScript(binary) {
		return false
	}
	return string(words[1]) == binary || (len(words) > 2 && string(words[2]) == binary)
}

// isScript reports whether file starts with "#!".
func isScript(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [2]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == "#!"
}

// alive reports whether pid is a live (not zombie) process that started at
// startTicks (when not zero) and runs binary: the process a record names,
// not another that got its pid later. It decides adoption.
func alive(pid int, startTicks uint64, binary string) bool {
	return exists(pid, startTicks) && runs(pid, binary)
}

// exists reports whether pid is a process that has not exited yet and, when
// startTicks is not zero, started then. It decides whether an adopted
// process still runs: a dying process loses its cmdline before it turns
// zombie, so the cmdline cannot tell.
func exists(pid int, startTicks uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := readStat(pid)
	if err != nil || st.state == 'Z' || st.state == 'X' {
		return false
	}
	return startTicks == 0 || st.startTicks == startTicks
}

// killGroup signals the process group led by pid; a group that is gone is
// no error.
func killGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s to process group %d: %w", sig, pid, err)
	}
	return nil
}
