// Package apps is the manager's API for guid applications and the node
// side that runs them.
//
// The API (Handler, behind RequireToken) validates a request completely —
// DNS-label guid, allowed image, environment, labels, metrics port and
// path — before anything is written, and writes apps/<guid> once, with an
// etcd transaction that only creates, choosing the live member with the
// fewest apps unless the request names one. Any agent answers it.
//
// The Reconciler, a session worker on every node, runs the apps assigned
// to its node: it turns each record into a workload spec (name and host
// name = guid, guid label, OTEL_* environment pointing at the node's trace
// agent), publishes the metrics port as a target group, and reports the
// observed state under status/apps/<guid> with the node's lease.
//
// It never writes apps/<guid> after creation (the master's placement duty
// moves apps, fenced) and never passes anything from a request or a record
// to a workload or a label that has not passed AppSpec.Validate, nor an
// image outside the node's own api.allowed_images. Records that do not
// validate (duplicate or case-variant keys and values over MaxRecordBytes
// included) are counted, logged once and skipped.
package apps
