package cgroup

import "strings"

// Identity is what a cgroup path says about its owner.
type Identity struct {
	// Runtime is "docker", "containerd" or "crio" when the path tells
	// (systemd driver scopes, Docker's cgroupfs parent); "" otherwise.
	Runtime string
	// ContainerID is the 64-hex-digit container id; "" for a pod's own
	// cgroup.
	ContainerID string
	// PodUID is the pod's uid (with dashes) for the kubepods tree.
	PodUID string
	// QoS is the pod's class: "guaranteed", "burstable" or "besteffort".
	QoS string
}

// Identify reads the owner of a cgroup path, as /proc/<pid>/cgroup and
// Scan give it:
//
//	/docker/<id>                                   Docker, cgroupfs driver
//	/system.slice/docker-<id>.scope                Docker, systemd driver
//	/kubepods/burstable/pod<uid>/<id>              kubelet, cgroupfs driver
//	/kubepods.slice/kubepods-burstable.slice/
//	  kubepods-burstable-pod<uid_with_underscores>.slice/
//	  cri-containerd-<id>.scope                    kubelet, systemd driver
//
// (and crio-<id>.scope, and guaranteed pods without a QoS level). The same
// paths appear in v1 (per controller) and v2. ok is false for anything
// else, such as a conmon scope or a slice.
func Identify(path string) (id Identity, ok bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	last := segs[len(segs)-1]
	parent := ""
	if len(segs) > 1 {
		parent = segs[len(segs)-2]
	}
	inPods := false
	for i, s := range segs {
		switch {
		case s == "kubepods" || s == "kubepods.slice":
			inPods = true
		case inPods && (s == "burstable" || s == "besteffort"):
			id.QoS = s
		case inPods && strings.HasPrefix(s, "kubepods-") && strings.HasSuffix(s, ".slice"):
			// kubepods-burstable.slice, kubepods-burstable-pod<uid>.slice,
			// kubepods-pod<uid>.slice
			mid := strings.TrimSuffix(strings.TrimPrefix(s, "kubepods-"), ".slice")
			for _, q := range []string{"burstable", "besteffort"} {
				if mid == q || strings.HasPrefix(mid, q+"-") {
					id.QoS = q
					mid = strings.TrimPrefix(strings.TrimPrefix(mid, q), "-")
				}
			}
			if uid, found := strings.CutPrefix(mid, "pod"); found && validUID(strings.ReplaceAll(uid, "_", "-")) {
				id.PodUID = strings.ReplaceAll(uid, "_", "-")
				if i == len(segs)-1 {
					ok = true
				}
			}
		case inPods && strings.HasPrefix(s, "pod") && validUID(s[3:]):
			id.PodUID = s[3:]
			if i == len(segs)-1 {
				ok = true
			}
		}
	}
	if inPods && id.PodUID != "" && id.QoS == "" {
		id.QoS = "guaranteed"
	}
	if !inPods || id.PodUID == "" {
		id.QoS = ""
	}
	for _, scope := range []struct{ prefix, runtime string }{
		{"docker-", "docker"}, {"cri-containerd-", "containerd"}, {"crio-", "crio"},
	} {
		if c, found := strings.CutPrefix(last, scope.prefix); found {
			if c, found = strings.CutSuffix(c, ".scope"); found && isContainerID(c) {
				id.Runtime, id.ContainerID = scope.runtime, c
				return id, true
			}
		}
	}
	if isContainerID(last) {
		switch {
		case parent == "docker":
			id.Runtime, id.ContainerID = "docker", last
			return id, true
		case inPods && id.PodUID != "":
			id.ContainerID = last
			return id, true
		}
	}
	if ok {
		return id, true
	}
	return Identity{}, false
}

// isContainerID accepts the 64 lower-case hex digits of a container id.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validUID accepts a Kubernetes uid: 8-4-4-4-12 hex digits, or the 32 hex
// digits the kubelet gives a static pod (a hash of its manifest; its
// mirror pod in the API carries the hash in an annotation).
func validUID(s string) bool {
	if len(s) == 32 {
		for _, c := range []byte(s) {
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
		return true
	}
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}
