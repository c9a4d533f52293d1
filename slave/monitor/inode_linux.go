package monitor

import (
	"io/fs"
	"syscall"
)

// inode tells a file replaced by a rename (how applications write their
// files atomically) from the same file, when size and time are equal.
func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
