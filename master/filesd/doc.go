// Package filesd owns the master's Prometheus file_sd directory: one
// <job>.json per job, replaced atomically (temporary file and rename in the
// same directory), rewritten only when its bytes change, each job on its
// own so that one file that cannot be written holds up no other.
//
// The directory remembers the etcd cluster ID and the highest leader
// revision that wrote it; a writer with a lower revision of the same etcd
// history (a stale master) is refused with ErrStaleLeader and changes
// nothing, while a record of another history (a replaced or wiped etcd)
// starts a new sequence. It must never touch files it does not own: only
// files named after a valid job and its own dot files.
package filesd
