package cgroup

import (
	"bytes"
	"fmt"
)

// Stats are a cgroup's counters, in the units of the container_* metrics.
type Stats struct {
	// CPU time in seconds: total, in user and in system mode.
	CPUUsageSeconds, CPUUserSeconds, CPUSystemSeconds float64
	// Memory in bytes. WorkingSet is usage minus inactive file pages (what
	// the kernel cannot reclaim at once, as the kubelet counts it); RSS is
	// anonymous memory; Cache is the page cache.
	MemoryUsage, MemoryWorkingSet, MemoryRSS, MemoryCache uint64
	// MemoryLimit is 0 when the cgroup has none.
	MemoryLimit uint64
	// Bytes read from and written to block devices.
	IOReadBytes, IOWriteBytes uint64
	// Tasks is the number of tasks (threads) the pids controller counts;
	// 0 when it is not there.
	Tasks uint64
}

// userHZ is the unit of cpuacct.stat (USER_HZ).
const userHZ = 100

// unlimited is the smallest "no limit" v1 writes (PAGE_COUNTER_MAX pages,
// rounded down); anything above is no limit.
const unlimited = 1 << 62

// Stats reads the counters of the cgroup at path into s. A missing
// controller file (a v2 controller not enabled for that subtree) leaves
// its fields zero; a cgroup that is gone returns an error IsGone knows.
func (h *Hierarchy) Stats(path string, s *Stats) error {
	*s = Stats{}
	if !h.Exists(path) {
		return fmt.Errorf("cgroup %s: %w", path, errGone)
	}
	if h.version == V2 {
		h.statsV2(path, s)
	} else {
		h.statsV1(path, s)
	}
	// A container that stopped while its files were read leaves zeros
	// behind, not an error: a second look tells.
	if !h.Exists(path) {
		return fmt.Errorf("cgroup %s: %w", path, errGone)
	}
	return nil
}

func (h *Hierarchy) statsV2(path string, s *Stats) {
	d := h.dir("", path)
	if b, err := h.read(d, "cpu.stat"); err == nil {
		eachKV(b, func(k, v []byte) {
			switch string(k) {
			case "usage_usec":
				s.CPUUsageSeconds = float64(parseUint(v)) / 1e6
			case "user_usec":
				s.CPUUserSeconds = float64(parseUint(v)) / 1e6
			case "system_usec":
				s.CPUSystemSeconds = float64(parseUint(v)) / 1e6
			}
		})
	}
	if b, err := h.read(d, "memory.current"); err == nil {
		s.MemoryUsage = parseUint(b)
	}
	var inactive uint64
	if b, err := h.read(d, "memory.stat"); err == nil {
		eachKV(b, func(k, v []byte) {
			switch string(k) {
			case "anon":
				s.MemoryRSS = parseUint(v)
			case "file":
				s.MemoryCache = parseUint(v)
			case "inactive_file":
				inactive = parseUint(v)
			}
		})
	}
	s.MemoryWorkingSet = sub(s.MemoryUsage, inactive)
	if b, err := h.read(d, "memory.max"); err == nil && !bytes.HasPrefix(b, []byte("max")) {
		s.MemoryLimit = parseUint(b)
	}
	if b, err := h.read(d, "io.stat"); err == nil {
		// 8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0
		for _, line := range bytes.Split(b, []byte{'\n'}) {
			for _, f := range bytes.Fields(line) {
				if v, ok := bytes.CutPrefix(f, []byte("rbytes=")); ok {
					s.IOReadBytes += parseUint(v)
				} else if v, ok := bytes.CutPrefix(f, []byte("wbytes=")); ok {
					s.IOWriteBytes += parseUint(v)
				}
			}
		}
	}
	if b, err := h.read(d, "pids.current"); err == nil {
		s.Tasks = parseUint(b)
	}
}

func (h *Hierarchy) statsV1(path string, s *Stats) {
	if d := h.dir("cpuacct", path); d != "" {
		if b, err := h.read(d, "cpuacct.usage"); err == nil {
			s.CPUUsageSeconds = float64(parseUint(b)) / 1e9
		}
		if b, err := h.read(d, "cpuacct.stat"); err == nil {
			eachKV(b, func(k, v []byte) {
				switch string(k) {
				case "user":
					s.CPUUserSeconds = float64(parseUint(v)) / userHZ
				case "system":
					s.CPUSystemSeconds = float64(parseUint(v)) / userHZ
				}
			})
		}
	}
	if d := h.dir("memory", path); d != "" {
		if b, err := h.read(d, "memory.usage_in_bytes"); err == nil {
			s.MemoryUsage = parseUint(b)
		}
		var inactive uint64
		if b, err := h.read(d, "memory.stat"); err == nil {
			// total_* include the cgroup's children; a container's cgroup
			// usually has none, and then they equal the plain ones.
			eachKV(b, func(k, v []byte) {
				switch string(k) {
				case "total_rss":
					s.MemoryRSS = parseUint(v)
				case "total_cache":
					s.MemoryCache = parseUint(v)
				case "total_inactive_file":
					inactive = parseUint(v)
				}
			})
		}
		s.MemoryWorkingSet = sub(s.MemoryUsage, inactive)
		if b, err := h.read(d, "memory.limit_in_bytes"); err == nil {
			if l := parseUint(b); l < unlimited {
				s.MemoryLimit = l
			}
		}
	}
	if d := h.dir("blkio", path); d != "" {
		// The throttle files count every I/O whatever the scheduler; the
		// plain io_service_bytes ones only exist with CFQ/BFQ.
		for _, name := range []string{"blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes", "blkio.io_service_bytes_recursive"} {
			b, err := h.read(d, name)
			if err != nil {
				continue
			}
			// 8:0 Read 4096 / 8:0 Write 0 / ... / Total 4096
			for _, line := range bytes.Split(b, []byte{'\n'}) {
				f := bytes.Fields(line)
				if len(f) != 3 {
					continue
				}
				switch string(f[1]) {
				case "Read":
					s.IOReadBytes += parseUint(f[2])
				case "Write":
					s.IOWriteBytes += parseUint(f[2])
				}
			}
			break
		}
	}
	if d := h.dir("pids", path); d != "" {
		if b, err := h.read(d, "pids.current"); err == nil {
			s.Tasks = parseUint(b)
		}
	}
}

// eachKV calls fn for every "key value" line.
func eachKV(b []byte, fn func(k, v []byte)) {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if k, v, ok := bytes.Cut(line, []byte{' '}); ok {
			fn(k, v)
		}
	}
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}
