// Package releases is the master duty of Kubernetes mode: it keeps the
// cluster's Helm releases as the configuration and the apps in etcd want
// them, through the helm driver.
//
//  1. At the start of a term it reads apps/ (then follows a watch) and
//     lists the releases and guid namespaces that carry the agent's labels
//     for this cluster (owner "releases").
//  2. It wants the metrics stack and the log shipper in the agent's
//     namespace, and for each valid app a namespace named by the guid
//     (labelled with it), the trace collector and the app: the agent's
//     built-in chart (a Deployment) for an image, or the configured chart
//     the app names. The agent's values are rendered from checked data
//     (values.go) and merged with the user's.
//  3. Each release is its own unit of work, run aside: a slow or failing
//     one never holds the others (nor the other duties). A failure is kept
//     with Helm's message in the status and retried with backoff.
//     Everything is checked again every Interval (a read when nothing
//     changed: an adopted release keeps its revision).
//  4. Releases and guid namespaces it owns that nothing wants are
//     uninstalled and deleted; nothing else is ever touched.
//
// Fencing: every Kubernetes write is preceded, right before it, by a
// linearizable read of the term's election key (etcd.Leader.Revision), and
// runs under the term's context; each release carries the term that last
// wrote it, and a release written by a later term of the same etcd ends
// this term (ErrStaleTerm). An action that had already started when the
// term ended may still finish: Kubernetes has no fencing token; the next
// master waits for it (Helm's pending state) and then makes the release
// what it wants.
//
// The duty also owns MasterLabel, which labels the master's own pod so
// that the chart's Service routes to it.
package releases
