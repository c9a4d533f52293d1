// Package master owns the duties of the elected agent. Each duty runs under
// the term's context, which ends the moment leadership is lost, and writes to
// etcd only through the term's fenced transaction (etcd.Leader.Txn).
//
// Subpackages hold the duties themselves; this package only runs them
// together: one failing duty ends the term for all of them.
package master
