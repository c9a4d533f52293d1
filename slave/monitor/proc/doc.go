// Package proc reads what the node monitor needs from /proc: the list of
// processes and, per process, its stat, status, io, open file count and
// limits, its command line and cgroups, and the network counters of its
// namespace.
//
// The three files read for every measured process on every refresh (stat,
// status, io) are parsed here without fmt or regexp into reused buffers,
// because that is where the monitor spends its time; everything read once
// per process or per namespace goes through github.com/prometheus/procfs.
// It never writes to /proc, and a process that is gone mid-read is an
// error IsGone recognises, never a partial value.
package proc
