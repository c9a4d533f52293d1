package proc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/procfs"
)

// UserHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture the agent is built for).
const UserHZ = 100

// FS reads one /proc tree. An FS keeps buffers between reads and so is not
// safe for concurrent use: one refresh loop owns it.
type FS struct {
	root  string
	pfs   procfs.FS
	path  []byte
	buf   []byte
	names []string
	st    syscall.Stat_t
}

// NewFS returns a reader of the proc file system mounted at root.
func NewFS(root string) (*FS, error) {
	pfs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("proc file system at %s: %w", root, err)
	}
	return &FS{root: strings.TrimSuffix(root, "/"), pfs: pfs, buf: make([]byte, 4096)}, nil
}

// Root is the mount point read.
func (f *FS) Root() string { return f.root }

// IsGone reports whether err means that the process no longer exists:
// it exited between the listing and the read.
func IsGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// IsPermission reports whether err is a refusal to read another user's
// process (the agent runs without CAP_SYS_PTRACE).
func IsPermission(err error) bool { return errors.Is(err, fs.ErrPermission) }

// PIDs appends the ids of every process (not thread) to dst.
func (f *FS) PIDs(dst []int) ([]int, error) {
	d, err := os.Open(f.root)
	if err != nil {
		return dst, err
	}
	defer d.Close()
	for {
		f.names, err = d.Readdirnames(1024)
		for _, n := range f.names {
			if n[0] < '0' || n[0] > '9' {
				continue
			}
			if pid, perr := strconv.Atoi(n); perr == nil {
				dst = append(dst, pid)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return dst, nil
			}
			return dst, err
		}
	}
}

// pidPath sets f.path to <root>/<pid>/<name> and returns it as a string.
func (f *FS) pidPath(pid int, name string) string {
	f.path = append(f.path[:0], f.root...)
	f.path = append(f.path, '/')
	f.path = strconv.AppendInt(f.path, int64(pid), 10)
	if name != "" {
		f.path = append(f.path, '/')
		f.path = append(f.path, name...)
	}
	return string(f.path)
}

// read returns the whole of <root>/<pid>/<name> in f.buf, valid until the
// next read. /proc files have no size, so the buffer grows until a read
// comes back short.
func (f *FS) read(pid int, name string) ([]byte, error) {
	path := f.pidPath(pid, name)
	fd, err := open(path)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	n := 0
	for {
		if n == len(f.buf) {
			f.buf = append(f.buf, make([]byte, len(f.buf))...)
		}
		m, err := syscall.Read(fd, f.buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			return f.buf[:n], nil
		}
		n += m
	}
}

func open(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// Stat reads /proc/<pid>/stat into s. s.Comm points into the FS's buffer
// and is valid until the next read: copy it to keep it.
func (f *FS) Stat(pid int, s *Stat) error {
	b, err := f.read(pid, "stat")
	if err != nil {
		return err
	}
	if err := parseStat(b, s); err != nil {
		return fmt.Errorf("%s/%d/stat: %w", f.root, pid, err)
	}
	s.PID = pid
	return nil
}

// Status reads the context switch counts and the swapped-out memory from
// /proc/<pid>/status.
func (f *FS) Status(pid int, s *Status) error {
	b, err := f.read(pid, "status")
	if err != nil {
		return err
	}
	parseStatus(b, s)
	return nil
}

// IO reads /proc/<pid>/io. Reading another user's process needs
// CAP_SYS_PTRACE: IsPermission tells that case.
func (f *FS) IO(pid int, out *IO) error {
	b, err := f.read(pid, "io")
	if err != nil {
		return err
	}
	parseIO(b, out)
	return nil
}

// FDs counts the open file descriptors of pid. Since Linux 6.2 the size
// of /proc/<pid>/fd is that count, one stat call; older kernels list it.
func (f *FS) FDs(pid int) (int, error) {
	path := f.pidPath(pid, "fd")
	for {
		err := syscall.Stat(path, &f.st)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, &fs.PathError{Op: "stat", Path: path, Err: err}
		}
		break
	}
	if f.st.Size > 0 {
		return int(f.st.Size), nil
	}
	d, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		f.names, err = d.Readdirnames(1024)
		n += len(f.names)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}

// MaxFDs is the soft limit of open files of pid (RLIMIT_NOFILE); 0 means
// unlimited.
func (f *FS) MaxFDs(pid int) (uint64, error) {
	p, err := f.pfs.Proc(pid)
	if err != nil {
		return 0, err
	}
	l, err := p.Limits()
	if err != nil {
		return 0, err
	}
	if l.OpenFiles == ^uint64(0) {
		return 0, nil
	}
	return l.OpenFiles, nil
}

// Cmdline is the command line of pid with its arguments joined by spaces;
// "" for a kernel thread.
func (f *FS) Cmdline(pid int) (string, error) {
	p, err := f.pfs.Proc(pid)
	if err != nil {
		return "", err
	}
	args, err := p.CmdLine()
	if err != nil {
		return "", err
	}
	return strings.Join(args, " "), nil
}

// Cgroups are the cgroup paths of pid, one per hierarchy (v1) or the one
// of the unified hierarchy (v2).
func (f *FS) Cgroups(pid int) ([]procfs.Cgroup, error) {
	p, err := f.pfs.Proc(pid)
	if err != nil {
		return nil, err
	}
	return p.Cgroups()
}

// NetNS is the inode of pid's network namespace, which tells namespaces
// apart.
func (f *FS) NetNS(pid int) (uint64, error) {
	link, err := os.Readlink(f.pidPath(pid, "ns/net"))
	if err != nil {
		return 0, err
	}
	// "net:[4026531840]"
	i, j := strings.IndexByte(link, '['), strings.IndexByte(link, ']')
	if i < 0 || j < i {
		return 0, fmt.Errorf("%s/%d/ns/net: unexpected link %q", f.root, pid, link)
	}
	return strconv.ParseUint(link[i+1:j], 10, 64)
}

// NetDev sums the received and transmitted bytes of every interface of
// pid's network namespace.
func (f *FS) NetDev(pid int) (rx, tx uint64, err error) {
	p, err := f.pfs.Proc(pid)
	if err != nil {
		return 0, 0, err
	}
	dev, err := p.NetDev()
	if err != nil {
		return 0, 0, err
	}
	total := dev.Total()
	return total.RxBytes, total.TxBytes, nil
}

// BootTime is when the host booted, in seconds since the epoch; process
// start times count from it.
func (f *FS) BootTime() (uint64, error) {
	st, err := f.pfs.Stat()
	if err != nil {
		return 0, err
	}
	return st.BootTime, nil
}
