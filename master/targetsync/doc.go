// Package targetsync is the master duty that keeps the file_sd directory in
// step with the targets every agent publishes in etcd.
//
// At the start of a term it reads the whole targets prefix and rewrites
// every job file (so a new master's output equals the old one's), then
// follows a watch from that revision, rewriting only the jobs an event
// touched. A value that breaks the target group rule (etcd.Keys.ParseTargetKV)
// is counted, logged once and left out; a job whose file cannot be written
// is retried alone. It writes files only through filesd.Writer under the
// term, and stops at once when the term ends.
//
// It never empties the files because etcd went away: nothing is written
// during an outage, and afterwards removals are held (etcd.RemovalHold)
// until the agents had a TTL to re-register, also across a term that
// ended in the outage.
package targetsync
