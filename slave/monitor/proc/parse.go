package proc

import (
	"bytes"
	"errors"
)

// Stat is what the monitor uses of /proc/<pid>/stat.
type Stat struct {
	PID, PPID int
	// Comm is the process name; it points into the reader's buffer.
	Comm  []byte
	State byte
	// MinFlt, MajFlt: page faults; UTime, STime: CPU time in UserHZ ticks.
	MinFlt, MajFlt uint64
	UTime, STime   uint64
	NumThreads     int64
	// StartTime is in UserHZ ticks since boot; with the pid it identifies
	// a process across pid reuse.
	StartTime uint64
	// VSize is in bytes, RSS in pages.
	VSize uint64
	RSS   int64
}

// Status is what the monitor uses of /proc/<pid>/status.
type Status struct {
	VoluntaryCtxtSwitches, NonvoluntaryCtxtSwitches uint64
	// VmSwapBytes is swapped-out anonymous memory.
	VmSwapBytes uint64
}

// IO is what the monitor uses of /proc/<pid>/io: bytes that went to or
// came from the storage layer.
type IO struct {
	ReadBytes, WriteBytes uint64
}

var errFormat = errors.New("unexpected format")

// parseStat reads the fields after the command name, which is in
// parentheses and may itself hold spaces and parentheses: the last ')'
// ends it.
func parseStat(b []byte, s *Stat) error {
	l := bytes.IndexByte(b, '(')
	r := bytes.LastIndexByte(b, ')')
	if l < 0 || r < l || r+2 >= len(b) {
		return errFormat
	}
	s.Comm = b[l+1 : r]
	rest := b[r+2:]
	s.State = rest[0]
	// Field numbers as in proc(5), counting from 3 (state).
	field := 3
	for i := 0; i < len(rest) && field <= 24; field++ {
		j := i
		for j < len(rest) && rest[j] != ' ' && rest[j] != '\n' {
			j++
		}
		tok := rest[i:j]
		switch field {
		case 4:
			s.PPID = int(parseInt(tok))
		case 10:
			s.MinFlt = parseUint(tok)
		case 12:
			s.MajFlt = parseUint(tok)
		case 14:
			s.UTime = parseUint(tok)
		case 15:
			s.STime = parseUint(tok)
		case 20:
			s.NumThreads = parseInt(tok)
		case 22:
			s.StartTime = parseUint(tok)
		case 23:
			s.VSize = parseUint(tok)
		case 24:
			s.RSS = parseInt(tok)
		}
		i = j + 1
	}
	if field <= 24 {
		return errFormat
	}
	return nil
}

var (
	keyVol    = []byte("voluntary_ctxt_switches:")
	keyNonvol = []byte("nonvoluntary_ctxt_switches:")
	keySwap   = []byte("VmSwap:")
	keyRead   = []byte("read_bytes:")
	keyWrite  = []byte("write_bytes:")
	newline   = []byte{'\n'}
)

// parseStatus reads "Key:\tvalue" lines; absent keys (a kernel thread has
// no VmSwap) stay zero.
func parseStatus(b []byte, s *Status) {
	*s = Status{}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, newline)
		switch {
		case bytes.HasPrefix(line, keyVol):
			s.VoluntaryCtxtSwitches = parseUint(bytes.TrimSpace(line[len(keyVol):]))
		case bytes.HasPrefix(line, keyNonvol):
			s.NonvoluntaryCtxtSwitches = parseUint(bytes.TrimSpace(line[len(keyNonvol):]))
		case bytes.HasPrefix(line, keySwap):
			v := bytes.TrimSpace(bytes.TrimSuffix(line[len(keySwap):], []byte(" kB")))
			s.VmSwapBytes = parseUint(v) * 1024
		}
	}
}

func parseIO(b []byte, io *IO) {
	*io = IO{}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, newline)
		switch {
		case bytes.HasPrefix(line, keyRead):
			io.ReadBytes = parseUint(bytes.TrimSpace(line[len(keyRead):]))
		case bytes.HasPrefix(line, keyWrite):
			io.WriteBytes = parseUint(bytes.TrimSpace(line[len(keyWrite):]))
		}
	}
}

// parseUint reads leading decimal digits; the kernel writes nothing else.
func parseUint(b []byte) uint64 {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

func parseInt(b []byte) int64 {
	if len(b) > 0 && b[0] == '-' {
		return -int64(parseUint(b[1:]))
	}
	return int64(parseUint(b))
}
