// Package placement is the master duty that moves the apps of dead nodes.
//
// It follows members/ and apps/ for the length of a term. An app whose
// assigned node has had no member record for at least Grace (so that an
// agent that restarts keeps its apps) and that is not pinned is assigned
// to the live member with the fewest apps. Pinned apps stay where the
// manager put them, waiting for their node.
//
// Each move is one transaction guarded by the term's fence
// (CreateRevision(election key) == term revision) and by the record's
// ModRevision, so a stale master moves nothing and a record changed
// meanwhile (deleted, re-created, moved) is never overwritten. It never
// creates or deletes app records, and never writes anything else. The node
// that comes back runs only what is assigned to it: its Reconciler drops
// the moved apps and its Supervisor removes their workloads.
package placement
