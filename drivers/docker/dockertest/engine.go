package dockertest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// AptPackages install what this package needs on Debian.
const AptPackages = "docker.io busybox-static"

const (
	readyTimeout = 30 * time.Second
	// stopTimeout covers dockerd's own shutdown, which stops running
	// containers with their stop timeouts (15s at most by default).
	stopTimeout = 25 * time.Second
	killTimeout = 5 * time.Second
)

// Engine is a dockerd of one test.
type Engine struct {
	// Dir is the engine's directory: data, exec root, socket, log.
	Dir string
	// Host is the engine's address, for DOCKER_HOST or docker.WithHost.
	Host string
	// Client talks to the engine; it is closed when the test ends.
	Client *client.Client

	cmd    *exec.Cmd
	exited chan struct{} // closed when dockerd has exited
}

// Need fails the test when CI=true and skips it otherwise if the named
// program is missing; it returns the program's path.
func Need(t testing.TB, program string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := filepath.Join(dir, program); isExecutable(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (CI=true): apt-get install %s", program, AptPackages)
	}
	t.Skipf("%s is missing; to run this test: apt-get install %s", program, AptPackages)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start starts a dockerd for the test and stops it (SIGTERM, then SIGKILL)
// when the test ends. Its directory sits directly under /tmp with a short
// name, because the engine's unix sockets live under it and a socket path
// may not exceed 108 bytes.
func Start(t testing.TB) *Engine {
	t.Helper()
	dockerd := Need(t, "dockerd")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("dockerd needs root (CI=true)")
		}
		t.Skip("dockerd needs root")
	}
	dir, err := os.MkdirTemp("/tmp", "dk")
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	e := &Engine{Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock"), exited: make(chan struct{})}
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("dockertest: %v", err)
	}
	defer logf.Close()
	e.cmd = exec.Command(dockerd,
		"--storage-driver=overlay2", "--iptables=false", "--ip6tables=false", "--bridge=none",
		"--data-root="+filepath.Join(dir, "data"), "--exec-root="+filepath.Join(dir, "exec"),
		"--pidfile="+filepath.Join(dir, "dockerd.pid"), "--host="+e.Host)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	// Its own group, so a kill reaches the containerd it starts; and it
	// goes when the test binary dies before its clean-up ran.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := e.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("dockertest: start dockerd: %v", err)
	}
	go func() {
		_ = e.cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() { e.stop(t) })

	e.Client, err = client.NewClientWithOpts(client.WithHost(e.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("dockertest: client: %v", err)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := e.Client.Ping(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-e.exited:
			t.Fatalf("dockertest: dockerd exited before it answered: %v\n%s", e.cmd.ProcessState, e.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockertest: dockerd does not answer at %s after %s: %v\n%s", e.Host, readyTimeout, err, e.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.Client.NegotiateAPIVersion(context.Background())
	return e
}

// logTail returns the end of dockerd's log.
func (e *Engine) logTail() string {
	b, _ := os.ReadFile(filepath.Join(e.Dir, "dockerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (e *Engine) stop(t testing.TB) {
	if e.Client != nil {
		e.Client.Close()
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(stopTimeout):
		t.Errorf("dockertest: dockerd ignored SIGTERM for %s: killing its process group\n%s", stopTimeout, e.logTail())
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-e.exited:
		case <-time.After(killTimeout):
			t.Errorf("dockertest: dockerd (pid %d) survives SIGKILL", e.cmd.Process.Pid)
			return
		}
	}
	// dockerd leaves its network namespace mounted (exec/netns/default).
	if err := unmountUnder(e.Dir); err != nil {
		t.Errorf("dockertest: %v", err)
	}
	if err := os.RemoveAll(e.Dir); err != nil {
		t.Errorf("dockertest: remove %s: %v", e.Dir, err)
	}
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			n := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				n = n*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Logs returns what a container wrote to stdout and stderr so far.
func Logs(t testing.TB, cli *client.Client, name string) string {
	t.Helper()
	rc, err := cli.ContainerLogs(context.Background(), name, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs of %s: %v", name, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		t.Fatalf("logs of %s: %v", name, err)
	}
	return out.String()
}
