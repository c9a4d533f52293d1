package dockertest

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// BusyboxPath is the static busybox that stand-in images are made of
// (Debian package busybox-static).
const BusyboxPath = "/bin/busybox"

// StandInScript is the entrypoint of a stand-in image, a FAKE of the
// component it stands in for. It prints its arguments and every file an
// argument names (`/etc/x.toml` or `--config=/etc/x.toml`), so a test can
// read from the container's log which config it was given. While a file
// named StandInHold lies beside one of those files it is still starting,
// as Vector is before it installs its signal handlers: a SIGHUP kills it
// (exit 129). Then it traps SIGHUP (printing "stand-in reloaded" and its
// config files again), and only after that, when a config file has an
// [api] section with enabled = true and an address, answers GET /health
// there (busybox httpd), as Vector's API does once it runs. It prints
// "stand-in ready" and sleeps until stopped.
const StandInScript = `#!/bin/sh
echo "stand-in for ${STANDIN_FOR:-a component that cannot run here}; args: $*"
echo "hostname: $(hostname)"
configs() {
	for a in "$@"; do
		f="${a#*=}"
		case "$f" in
		/*) if [ -f "$f" ]; then echo "--- $f"; cat "$f"; echo "--- end of $f"; fi ;;
		esac
	done
}
# api_address prints the address of an enabled [api] section of file $1,
# written as the agent renders it (address = '127.0.0.1:8686').
api_address() {
	section= enabled= address=
	while IFS= read -r line; do
		case "$line" in
		"["*) section="$line" ;;
		"enabled = true") [ "$section" = "[api]" ] && enabled=1 ;;
		"address = '"*"'") if [ "$section" = "[api]" ]; then address="${line#"address = '"}"; address="${address%"'"}"; fi ;;
		esac
	done < "$1"
	if [ -n "$enabled" ]; then echo "$address"; fi
}
configs "$@"
for a in "$@"; do
	f="${a#*=}"
	case "$f" in
	/*/*) while [ -e "${f%/*}/` + StandInHold + `" ]; do sleep 0.05; done ;;
	esac
done
trap 'echo "stand-in reloaded"; configs "$@"' HUP
api= www= httpd= sleeper=
trap 'kill $httpd $sleeper 2>/dev/null; if [ -n "$www" ]; then busybox rm -rf "$www"; fi; exit 0' TERM INT
for a in "$@"; do
	f="${a#*=}"
	case "$f" in
	/*) if [ -f "$f" ]; then api="${api:-$(api_address "$f")}"; fi ;;
	esac
done
if [ -n "$api" ]; then
	www="${TMPDIR:-/tmp}/stand-in-$$"
	busybox mkdir -p "$www"
	echo '{"ok":true}' > "$www/health"
	busybox httpd -f -p "$api" -h "$www" &
	httpd=$!
	echo "stand-in answers GET http://$api/health"
fi
echo "stand-in ready"
sleep 2147483647 &
sleeper=$!
while kill -0 $sleeper 2>/dev/null; do wait $sleeper; done
`

// StandInHold is the file that, beside a stand-in's config file, keeps
// the stand-in starting (a SIGHUP kills it) until a test removes it.
const StandInHold = "standin-hold"

// file is one entry of a root file system.
type file struct {
	name string // absolute path inside the image
	mode int64
	from string // host file to copy; empty for body or a directory
	body []byte
	link string // symbolic link target
	dir  bool
}

var (
	lddMu    sync.Mutex
	lddCache = map[string][]string{} // binary -> libraries and loader
)

var lddPath = regexp.MustCompile(`(/\S+)`)

// libraries returns the shared libraries and the loader that ldd lists for
// binary, once per test process; none for a static binary.
func libraries(binary string) ([]string, error) {
	lddMu.Lock()
	defer lddMu.Unlock()
	if libs, ok := lddCache[binary]; ok {
		return libs, nil
	}
	out, err := exec.Command("ldd", binary).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			lddCache[binary] = nil
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", binary, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no path.
		if m := lddPath.FindAllString(line, -1); len(m) > 0 {
			libs = append(libs, m[len(m)-1])
		}
	}
	lddCache[binary] = libs
	return libs, nil
}

// baseFiles are what every image gets: the directories and the account
// files a program may look for.
func baseFiles() []file {
	return []file{
		{name: "/bin", mode: 0o755, dir: true},
		{name: "/etc", mode: 0o755, dir: true},
		{name: "/tmp", mode: 0o1777, dir: true},
		{name: "/etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{name: "/etc/group", mode: 0o644, body: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
}

// ImportImage makes the local image name (e.g. "prom/prometheus:v2.42.0")
// from binaryPath: the binary as /bin/<base name>, the libraries ldd lists
// and the loader, with ENTRYPOINT ["/bin/<base name>"]. An image of that
// name already in the engine is kept: each engine imports it once.
func ImportImage(t testing.TB, cli *client.Client, name, binaryPath string) {
	t.Helper()
	if _, err := os.Stat(binaryPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dockertest: %s is missing (CI=true): %v", binaryPath, err)
		}
		t.Skipf("dockertest: %s is missing: %v", binaryPath, err)
	}
	libs, err := libraries(binaryPath)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	bin := "/bin/" + filepath.Base(binaryPath)
	files := append(baseFiles(), file{name: bin, mode: 0o755, from: binaryPath})
	for _, l := range libs {
		files = append(files, file{name: l, mode: 0o755, from: l})
	}
	importFiles(t, cli, name, files, fmt.Sprintf(`ENTRYPOINT [%q]`, bin))
}

// StandInImage makes the local image name as a stand-in for a component
// that cannot run on these machines (Vector): static busybox with
// StandInScript as its entrypoint. Tests that use it must say in their
// names that they run a stand-in.
func StandInImage(t testing.TB, cli *client.Client, name string) {
	t.Helper()
	BusyboxImage(t, cli, name, StandInScript, nil)
}

// BusyboxImage makes the local image name from static busybox (its shell,
// coreutils and httpd applets), the files given (path -> content) and
// script as the entrypoint: a test application in a few lines of shell.
func BusyboxImage(t testing.TB, cli *client.Client, name, script string, extra map[string]string) {
	t.Helper()
	Need(t, "busybox")
	files := append(baseFiles(),
		file{name: "/bin/busybox", mode: 0o755, from: BusyboxPath},
		file{name: "/entrypoint", mode: 0o755, body: []byte(script)},
	)
	for _, applet := range []string{"sh", "sleep", "cat", "echo", "ls", "env", "hostname", "test", "[", "httpd"} {
		files = append(files, file{name: "/bin/" + applet, mode: 0o777, link: "busybox"})
	}
	dirs := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(extra)) {
		if d := filepath.Dir(p); d != "/" && !dirs[d] {
			dirs[d] = true
			files = append(files, file{name: d, mode: 0o755, dir: true})
		}
		files = append(files, file{name: p, mode: 0o644, body: []byte(extra[p])})
	}
	importFiles(t, cli, name, files, `ENTRYPOINT ["/entrypoint"]`)
}

// importFiles imports files as the image name unless it exists.
func importFiles(t testing.TB, cli *client.Client, name string, files []file, changes ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, name); err == nil {
		return
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := writeTar(pw, files)
		pw.CloseWithError(err)
		werr <- err
	}()
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: pr, SourceName: "-"}, name, image.ImportOptions{Changes: changes})
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if the import failed early
	if terr := <-werr; terr != nil && err == nil {
		err = terr
	}
	if err != nil {
		t.Fatalf("dockertest: import image %s: %v", name, err)
	}
	if _, err := cli.ImageInspect(ctx, name); err != nil {
		t.Fatalf("dockertest: image %s is not there after its import: %v", name, err)
	}
}

// writeTar writes files as a tar stream, with parent directories first.
func writeTar(w io.Writer, files []file) error {
	tw := tar.NewWriter(w)
	seen := map[string]bool{"/": true}
	var mkdirs func(dir string) error
	mkdirs = func(dir string) error {
		if seen[dir] {
			return nil
		}
		if err := mkdirs(path.Dir(dir)); err != nil {
			return err
		}
		seen[dir] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "." + dir + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
	}
	for _, f := range files {
		if f.dir {
			if err := mkdirs(path.Dir(f.name)); err != nil {
				return err
			}
			if !seen[f.name] {
				seen[f.name] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "." + f.name + "/", Mode: f.mode, ModTime: time.Unix(0, 0)}); err != nil {
					return err
				}
			}
			continue
		}
		if err := mkdirs(path.Dir(f.name)); err != nil {
			return err
		}
		if err := writeFile(tw, f); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeFile(tw *tar.Writer, f file) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "." + f.name, Mode: f.mode, ModTime: time.Unix(0, 0)}
	if f.link != "" {
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.link
		return tw.WriteHeader(hdr)
	}
	if f.from == "" {
		hdr.Size = int64(len(f.body))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.body)
		return err
	}
	src, err := os.Open(f.from) // follows symlinks: the image gets the file
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}
