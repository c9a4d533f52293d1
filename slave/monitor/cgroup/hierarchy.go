package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Version is the cgroup version of a hierarchy.
type Version int

// The two cgroup versions.
const (
	V1 Version = 1
	V2 Version = 2
)

// Hierarchy is where this host's cgroup files are: the unified mount (v2)
// or one mount per controller (v1). It keeps a buffer between reads and
// is not safe for concurrent use.
type Hierarchy struct {
	version Version
	root    string            // v2 mount point
	mounts  map[string]string // v1: controller -> mount point
	buf     []byte
}

// NewV2 reads the unified hierarchy mounted at root.
func NewV2(root string) *Hierarchy {
	return &Hierarchy{version: V2, root: filepath.Clean(root), buf: make([]byte, 4096)}
}

// NewV1 reads the v1 controllers mounted where mounts says ("memory" ->
// "/sys/fs/cgroup/memory"); a controller may share a mount with others.
func NewV1(mounts map[string]string) *Hierarchy {
	m := make(map[string]string, len(mounts))
	for k, v := range mounts {
		m[k] = filepath.Clean(v)
	}
	return &Hierarchy{version: V1, mounts: m, buf: make([]byte, 4096)}
}

// Version is the hierarchy's cgroup version.
func (h *Hierarchy) Version() Version { return h.version }

// String says which hierarchy this is, for logs.
func (h *Hierarchy) String() string {
	if h.version == V2 {
		return "cgroup v2 at " + h.root
	}
	return "cgroup v1 (memory at " + h.mounts["memory"] + ")"
}

// Detect finds the hierarchy from a mountinfo file (/proc/self/mountinfo),
// among the mounts at or below under (/sys/fs/cgroup). v1 wins when a v1
// memory controller is mounted: a hybrid host (systemd's default before
// v2) also mounts an unified hierarchy, but without the controllers.
func Detect(mountinfo, under string) (*Hierarchy, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("cgroup mounts: %w", err)
	}
	defer f.Close()
	under = filepath.Clean(under)
	v1 := map[string]string{}
	v2 := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 > len(fields) {
			continue
		}
		point := unescape(fields[4])
		if point != under && !strings.HasPrefix(point, under+"/") {
			continue
		}
		switch fields[sep+1] {
		case "cgroup2":
			if v2 == "" || point == under {
				v2 = point
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				switch opt {
				case "cpu", "cpuacct", "memory", "blkio", "pids", "cpuset":
					v1[opt] = point
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroup mounts: %w", err)
	}
	if v1["memory"] != "" {
		return NewV1(v1), nil
	}
	if v2 != "" {
		return NewV2(v2), nil
	}
	return nil, fmt.Errorf("no cgroup hierarchy is mounted at or below %s (read %s)", under, mountinfo)
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// dir is the directory of path (a cgroup path such as "/docker/<id>") in
// controller's hierarchy; "" when that v1 controller is not mounted.
func (h *Hierarchy) dir(controller, path string) string {
	if h.version == V2 {
		return filepath.Join(h.root, path)
	}
	m := h.mounts[controller]
	if m == "" {
		return ""
	}
	return filepath.Join(m, path)
}

// IsGone reports whether err means the cgroup was removed (its container
// stopped) while it was read.
func IsGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV)
}

// read returns the content of dir/name in h.buf, valid until the next read.
func (h *Hierarchy) read(dir, name string) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n := 0
	for {
		if n == len(h.buf) {
			h.buf = append(h.buf, make([]byte, len(h.buf))...)
		}
		m, err := f.Read(h.buf[n:])
		n += m
		if errors.Is(err, io.EOF) || (err == nil && m == 0) {
			return h.buf[:n], nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// Procs appends the process ids in the cgroup at path to dst.
func (h *Hierarchy) Procs(path string, dst []int) ([]int, error) {
	controller := "memory"
	if h.version == V1 && h.mounts[controller] == "" {
		controller = "cpuacct"
	}
	d := h.dir(controller, path)
	if d == "" {
		return dst, fmt.Errorf("%s: no memory or cpuacct controller", h)
	}
	b, err := h.read(d, "cgroup.procs")
	if err != nil {
		return dst, err
	}
	for len(b) > 0 {
		line := b
		if i := indexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) > 0 {
			dst = append(dst, int(parseUint(line)))
		}
	}
	return dst, nil
}

// Exists reports whether the cgroup at path exists.
func (h *Hierarchy) Exists(path string) bool {
	controller := "memory"
	if h.version == V1 && h.mounts[controller] == "" {
		controller = "cpuacct"
	}
	d := h.dir(controller, path)
	if d == "" {
		return false
	}
	fi, err := os.Stat(d)
	return err == nil && fi.IsDir()
}

// scanRoot is the directory Scan walks: the unified hierarchy, or the v1
// memory controller (every container has a memory cgroup).
func (h *Hierarchy) scanRoot() string {
	if h.version == V2 {
		return h.root
	}
	if m := h.mounts["memory"]; m != "" {
		return m
	}
	return h.mounts["cpuacct"]
}

// maxDepth bounds Scan: kubepods.slice/kubepods-burstable.slice/
// kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope is 4 deep,
// below an agent-specific parent or two.
const maxDepth = 7

// Scan walks the hierarchy and calls fn for every cgroup Identify
// recognises, with its path from the hierarchy's root ("/docker/<id>").
// It does not descend into a container's cgroup. Directories that vanish
// while it walks are skipped.
func (h *Hierarchy) Scan(fn func(path string, id Identity)) error {
	root := h.scanRoot()
	if root == "" {
		return fmt.Errorf("%s: no memory or cpuacct controller", h)
	}
	var walk func(dir, path string, depth int) error
	walk = func(dir, path string, depth int) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if IsGone(err) && depth > 0 {
				return nil
			}
			return err
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			p := path + "/" + e.Name()
			if id, ok := Identify(p); ok {
				fn(p, id)
				if id.ContainerID != "" {
					continue
				}
			}
			if depth+1 < maxDepth {
				if err := walk(filepath.Join(dir, e.Name()), p, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(root, "", 0)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func parseUint(b []byte) uint64 {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

// errGone wraps fs.ErrNotExist for a cgroup directory that is not there.
var errGone = fs.ErrNotExist
