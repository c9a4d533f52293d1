// Package filesd owns the master's Prometheus file_sd directory: one
// <job>.json per job, replaced atomically (temporary file and rename in the
// same directory), rewritten only when its bytes change.
//
// The directory remembers the highest leader revision that wrote it; a
// writer with a lower revision (a stale master) is refused with
// ErrStaleLeader and changes nothing. It must never touch files it does not
// own: only *.json files and its own dot files.
package filesd
