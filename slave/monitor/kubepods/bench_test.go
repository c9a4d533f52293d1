package kubepods

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentproj/agent/slave/monitor/cgroup"
)

// BenchmarkRefresh is one reading of a node with 110 pods (the kubelet's
// default maximum) of two containers each, in a v2 systemd-driver tree
// with the files a kernel writes, every pod known to the watch. The watch
// is filled directly: this measures the cgroup side, not the API.
func BenchmarkRefresh(b *testing.B) {
	dir := b.TempDir()
	p, err := New(Config{Node: "n1", Interval: time.Hour, ProcRoot: filepath.Join("testdata", "proc"), Cgroups: cgroup.NewV2(dir)},
		nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	files := map[string]string{
		"cpu.stat":       "usage_usec 1000000\nuser_usec 600000\nsystem_usec 400000\n",
		"memory.current": "52428800\n",
		"memory.stat":    "anon 31457280\nfile 20971520\ninactive_file 8388608\n",
		"memory.max":     "max\n",
		"io.stat":        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
		"pids.current":   "2\n",
		"cgroup.procs":   "",
	}
	write := func(d string) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := range 110 {
		uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		pod := filepath.Join(dir, "kubepods.slice", "kubepods-burstable.slice", "kubepods-burstable-pod"+uidUnderscores(uid)+".slice")
		write(pod)
		containers := map[string]string{}
		for c := range 2 {
			id := fmt.Sprintf("%064x", i*10+c+1)
			write(filepath.Join(pod, "cri-containerd-"+id+".scope"))
			containers[id] = fmt.Sprintf("c%d", c)
		}
		p.watch.pods[uid] = &Pod{UID: uid, Name: fmt.Sprintf("pod-%d", i), Namespace: "ns", QoS: "Burstable", Containers: containers}
	}
	if s := p.Refresh(); len(s.Pods) != 110 || len(s.Pods[0].Containers) != 2 {
		b.Fatalf("pods read: %d", len(s.Pods))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.Refresh()
	}
}

func uidUnderscores(uid string) string {
	out := []byte(uid)
	for i, c := range out {
		if c == '-' {
			out[i] = '_'
		}
	}
	return string(out)
}
