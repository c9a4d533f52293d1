package cgroup

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const (
	fixtures   = "../../../testdata/cgroup"
	idV2Sys    = "35f95d053f6256a15931ba759eaadd3d9b59d74aa47e730a1cd95832a717472e"
	idV2Fs     = "d41254dfe5bf4ecd4b67439e8a881f95b3d7689ab8f188f6aa8bd4d02ecc5f6a"
	idV2Pod    = "ee38773bd11b82ecae0266c2ceca8098f6ecc1b83a6b6d387fd71bd97302d175"
	idV2PodG   = "f7c01fa6ac7800e15b80495533cded55bc03528c13a6002c51a5a36ceb2f7e3c"
	idV1Docker = "44b317d826b2d53c344ee49e3fe4686613870c72d811dfd8ec1645d4579f6a47"
	idV1Sys    = "33bf693c69a8c16687e2b3ba5b49411e2df9688b054afde66db1e23ed2f7e1e6"
	idV1Pod    = "b02b3c3b933443cec11e774fedf83d10ee179aeea478b9ac9e876f107d3e2a8c"
	uidB       = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	uidG       = "12345678-9abc-def0-1234-56789abcdef0"
	uidV1      = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	uidStatic  = "6d5e1c0b3a2f4e8d9c7b6a5f4e3d2c1b"
)

func TestIdentify(t *testing.T) {
	for path, want := range map[string]Identity{
		"/docker/" + idV1Docker:                           {Runtime: "docker", ContainerID: idV1Docker},
		"/system.slice/docker-" + idV2Sys + ".scope":      {Runtime: "docker", ContainerID: idV2Sys},
		"/process_api/x/docker/" + idV1Docker:             {Runtime: "docker", ContainerID: idV1Docker},
		"/kubepods/burstable/pod" + uidV1 + "/" + idV1Pod: {ContainerID: idV1Pod, PodUID: uidV1, QoS: "burstable"},
		"/kubepods/pod" + uidV1 + "/" + idV1Pod:           {ContainerID: idV1Pod, PodUID: uidV1, QoS: "guaranteed"},
		"/kubepods/besteffort/pod" + uidV1:                {PodUID: uidV1, QoS: "besteffort"},
		// A static pod's uid is its manifest's hash.
		"/kubepods/burstable/pod" + uidStatic + "/" + idV1Pod:                                    {ContainerID: idV1Pod, PodUID: uidStatic, QoS: "burstable"},
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidStatic + ".slice": {PodUID: uidStatic, QoS: "burstable"},
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-" + idV2Pod + ".scope": {
			Runtime: "containerd", ContainerID: idV2Pod, PodUID: uidB, QoS: "burstable"},
		"/kubepods.slice/kubepods-pod12345678_9abc_def0_1234_56789abcdef0.slice/crio-" + idV2PodG + ".scope": {
			Runtime: "crio", ContainerID: idV2PodG, PodUID: uidG, QoS: "guaranteed"},
		"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12345678_9abc_def0_1234_56789abcdef0.slice": {
			PodUID: uidG, QoS: "besteffort"},
	} {
		got, ok := Identify(path)
		if !ok || got != want {
			t.Errorf("Identify(%s)\n = %+v, %v\nwant %+v", path, got, ok, want)
		}
	}
	for _, path := range []string{
		"/", "/system.slice/ssh.service", "/docker", "/kubepods.slice/kubepods-burstable.slice",
		"/system.slice/crio-conmon-" + idV2Pod + ".scope", "/user.slice/" + idV1Docker,
		"/docker/" + idV1Docker[:12], "/kubepods/burstable/podnot-a-uid/" + idV1Pod,
	} {
		if got, ok := Identify(path); ok {
			t.Errorf("Identify(%s) = %+v, want not recognised", path, got)
		}
	}
}

func TestDetect(t *testing.T) {
	h, err := Detect(filepath.Join(fixtures, "mountinfo-v1-hybrid"), "/sys/fs/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
		"memory": "/sys/fs/cgroup/memory", "blkio": "/sys/fs/cgroup/blkio", "pids": "/sys/fs/cgroup/pids"}
	if h.Version() != V1 || !reflect.DeepEqual(h.mounts, want) {
		t.Fatalf("hybrid host: %v %v, want v1 with %v", h.Version(), h.mounts, want)
	}
	h, err = Detect(filepath.Join(fixtures, "mountinfo-v2"), "/sys/fs/cgroup")
	if err != nil || h.Version() != V2 || h.root != "/sys/fs/cgroup" {
		t.Fatalf("v2 host: %v, %v", h, err)
	}
	if _, err := Detect(filepath.Join(fixtures, "mountinfo-v2"), "/host/sys/fs/cgroup"); err == nil {
		t.Fatal("found a hierarchy outside the given root")
	}
	if _, err := Detect(filepath.Join(fixtures, "mountinfo-none"), "/sys/fs/cgroup"); err == nil {
		t.Fatal("found a hierarchy where none is mounted")
	}
	// This host: whatever it has, Detect finds one.
	if h, err := Detect("/proc/self/mountinfo", "/sys/fs/cgroup"); err != nil {
		t.Fatalf("this host: %v", err)
	} else {
		t.Logf("this host: %s", h)
	}
}

func scan(t *testing.T, h *Hierarchy) map[string]Identity {
	t.Helper()
	got := map[string]Identity{}
	if err := h.Scan(func(path string, id Identity) { got[path] = id }); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestScanAndStatsV2(t *testing.T) {
	h := NewV2(filepath.Join(fixtures, "v2"))
	got := scan(t, h)
	want := map[string]Identity{
		"/system.slice/docker-" + idV2Sys + ".scope": {Runtime: "docker", ContainerID: idV2Sys},
		"/docker/" + idV2Fs:                          {Runtime: "docker", ContainerID: idV2Fs},
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice": {PodUID: uidB, QoS: "burstable"},
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-" + idV2Pod + ".scope": {
			Runtime: "containerd", ContainerID: idV2Pod, PodUID: uidB, QoS: "burstable"},
		"/kubepods.slice/kubepods-pod12345678_9abc_def0_1234_56789abcdef0.slice":                             {PodUID: uidG, QoS: "guaranteed"},
		"/kubepods.slice/kubepods-pod12345678_9abc_def0_1234_56789abcdef0.slice/crio-" + idV2PodG + ".scope": {Runtime: "crio", ContainerID: idV2PodG, PodUID: uidG, QoS: "guaranteed"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Scan v2:\n got %v\nwant %v", got, want)
	}

	var s Stats
	path := "/system.slice/docker-" + idV2Sys + ".scope"
	if err := h.Stats(path, &s); err != nil {
		t.Fatal(err)
	}
	wantS := Stats{CPUUsageSeconds: 2.5, CPUUserSeconds: 1.5, CPUSystemSeconds: 1,
		MemoryUsage: 50 << 20, MemoryWorkingSet: 42 << 20, MemoryRSS: 30 << 20, MemoryCache: 20 << 20, MemoryLimit: 256 << 20,
		IOReadBytes: 4096 + 1000, IOWriteBytes: 8192 + 2000, Tasks: 3}
	if s != wantS {
		t.Fatalf("Stats v2:\n got %+v\nwant %+v", s, wantS)
	}
	procs, err := h.Procs(path, nil)
	if err != nil || !reflect.DeepEqual(procs, []int{400004101, 400004102}) {
		t.Fatalf("Procs = %v, %v", procs, err)
	}
	// No limit ("max") and no io controller enabled: zeros, not errors.
	if err := h.Stats("/docker/"+idV2Fs, &s); err != nil || s.MemoryLimit != 0 || s.IOReadBytes != 0 || s.MemoryUsage != 10<<20 {
		t.Fatalf("Stats of a cgroup without a limit or io.stat: %+v, %v", s, err)
	}
	if err := h.Stats("/docker/"+idV1Docker, &s); !IsGone(err) {
		t.Fatalf("Stats of a missing cgroup: %v, want IsGone", err)
	}
}

func TestScanAndStatsV1(t *testing.T) {
	root := filepath.Join(fixtures, "v1")
	h := NewV1(map[string]string{
		"cpu": filepath.Join(root, "cpu"), "cpuacct": filepath.Join(root, "cpuacct"), "memory": filepath.Join(root, "memory"),
		"blkio": filepath.Join(root, "blkio"), "pids": filepath.Join(root, "pids"),
	})
	got := scan(t, h)
	want := map[string]Identity{
		"/docker/" + idV1Docker:                           {Runtime: "docker", ContainerID: idV1Docker},
		"/system.slice/docker-" + idV1Sys + ".scope":      {Runtime: "docker", ContainerID: idV1Sys},
		"/kubepods/burstable/pod" + uidV1:                 {PodUID: uidV1, QoS: "burstable"},
		"/kubepods/burstable/pod" + uidV1 + "/" + idV1Pod: {ContainerID: idV1Pod, PodUID: uidV1, QoS: "burstable"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Scan v1:\n got %v\nwant %v", got, want)
	}
	var s Stats
	if err := h.Stats("/docker/"+idV1Docker, &s); err != nil {
		t.Fatal(err)
	}
	wantS := Stats{CPUUsageSeconds: 2, CPUUserSeconds: 1.5, CPUSystemSeconds: 0.5,
		MemoryUsage: 64 << 20, MemoryWorkingSet: 48 << 20, MemoryRSS: 40 << 20, MemoryCache: 24 << 20,
		IOReadBytes: 4096, IOWriteBytes: 12288, Tasks: 5}
	if s != wantS {
		t.Fatalf("Stats v1:\n got %+v\nwant %+v", s, wantS)
	}
	if err := h.Stats("/system.slice/docker-"+idV1Sys+".scope", &s); err != nil || s.MemoryLimit != 128<<20 {
		t.Fatalf("Stats v1 with a limit: %+v, %v", s, err)
	}
	// Only memory mounted: the rest stays zero.
	h = NewV1(map[string]string{"memory": filepath.Join(root, "memory")})
	if err := h.Stats("/docker/"+idV1Docker, &s); err != nil || s.MemoryUsage != 64<<20 || s.CPUUsageSeconds != 0 {
		t.Fatalf("Stats v1, memory only: %+v, %v", s, err)
	}
}

// A cgroup removed while it is read (its container stopped) is gone, not
// a set of zeros.
func TestStatsOfARemovedCgroup(t *testing.T) {
	dir := t.TempDir()
	cg := filepath.Join(dir, "docker", idV2Fs)
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cg, "memory.current"), []byte("100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := NewV2(dir)
	var s Stats
	if err := h.Stats("/docker/"+idV2Fs, &s); err != nil || s.MemoryUsage != 100 {
		t.Fatalf("%+v, %v", s, err)
	}
	if err := os.RemoveAll(cg); err != nil {
		t.Fatal(err)
	}
	if err := h.Stats("/docker/"+idV2Fs, &s); !IsGone(err) {
		t.Fatalf("removed cgroup: %v", err)
	}
	if _, err := h.Procs("/docker/"+idV2Fs, nil); !IsGone(err) {
		t.Fatalf("Procs of a removed cgroup: %v", err)
	}
}
