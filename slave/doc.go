// Package slave owns what every agent does, master or not: it keeps one etcd
// session (one lease for all of this agent's keys), registers the member
// record, campaigns for mastership and runs the master duties only while this
// agent holds the election, and serves the node HTTP API.
//
// The lifecycle of a Node, in order:
//  1. grant a lease and start a session (retried with backoff while etcd is
//     unreachable; /-/ready answers 503 meanwhile);
//  2. register members/<node> under the lease, refusing a node name that a
//     live agent already holds;
//  3. start the session workers (publishers of leased keys) and campaign;
//  4. on winning, run the master duties under a context that ends the moment
//     the session is lost, the election key goes away, or a fenced write fails;
//  5. on shutdown, stop the duties, resign, stop the workers and revoke the
//     lease, so the next master takes over at once.
//
// It never writes a master-owned key itself: master duties get an etcd.Leader
// and must use its fenced Txn.
package slave
