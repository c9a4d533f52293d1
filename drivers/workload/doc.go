// Package workload is the vocabulary every driver speaks: a Spec says what
// should run (name, image or binary, args, env, labels, hostname, mounts,
// restart policy, resources), a State says what does run, and a Driver makes
// the outside world match a Spec. The Supervisor keeps one caller's desired
// set of Specs running through a Driver: it restarts what crashed, adopts
// what an earlier agent started (by label) and removes orphans.
//
// Every workload a driver starts carries labels under LabelPrefix; the
// driver sets LabelManaged and LabelSpecHash itself, the caller sets the
// others. A driver must never touch a workload that lacks LabelManaged.
//
// The package owns no outside system and talks to none: it must never import
// a driver.
package workload
