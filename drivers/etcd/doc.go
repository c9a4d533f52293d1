// Package etcd is the agent's only door to etcd: the client, the embedded
// server, the key layout, the fenced write every master duty must use, and a
// typed registry of what agents publish.
//
// It knows nothing about what the keys mean to the master or the nodes; it
// must never write a master-owned key without the fence (Leader.Txn).
package etcd
