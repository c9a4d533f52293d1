// Package targetsync is the master duty that keeps the file_sd directory in
// step with the targets every agent publishes in etcd.
//
// At the start of a term it reads the whole targets prefix and rewrites
// every job file (so a new master's output equals the old one's), then
// follows a watch from that revision, rewriting only the jobs an event
// touched. A value that does not parse is counted, logged once and left out.
// It writes files only through filesd.Writer under the term's revision, and
// stops at once when the term ends.
package targetsync
