package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestParseStatOddComm(t *testing.T) {
	// A name with spaces and parentheses: only the last ')' ends it.
	line := "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 120 0 3 0 250 75 0 0 20 0 7 0 987654 123456789 512 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	var s Stat
	if err := parseStat([]byte(line), &s); err != nil {
		t.Fatal(err)
	}
	want := Stat{Comm: []byte("my (odd) name"), State: 'S', PPID: 1, MinFlt: 120, MajFlt: 3, UTime: 250, STime: 75,
		NumThreads: 7, StartTime: 987654, VSize: 123456789, RSS: 512}
	if string(s.Comm) != string(want.Comm) {
		t.Fatalf("comm %q", s.Comm)
	}
	s.Comm, want.Comm = nil, nil
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}
	if err := parseStat([]byte("12 (cut) S 1 2"), &s); err == nil {
		t.Fatal("a truncated stat line was accepted")
	}
}

func TestParseStatusAndIO(t *testing.T) {
	var st Status
	parseStatus([]byte("Name:\tx\nVmSwap:\t     12 kB\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n"), &st)
	if st != (Status{VoluntaryCtxtSwitches: 150, NonvoluntaryCtxtSwitches: 7, VmSwapBytes: 12 * 1024}) {
		t.Fatalf("status %+v", st)
	}
	var io IO
	parseIO([]byte("rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"), &io)
	if io != (IO{ReadBytes: 4096, WriteBytes: 8192}) {
		t.Fatalf("io %+v", io)
	}
}

// A real process, read while it runs and after it is gone.
func TestRealProcess(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	fs, err := NewFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	pids, err := fs.PIDs(nil)
	if err != nil || !slices.Contains(pids, pid) || !slices.Contains(pids, os.Getpid()) {
		t.Fatalf("PIDs: %v (%d pids)", err, len(pids))
	}
	var s Stat
	// Until it sleeps, it may not have exec'd or faulted its pages in.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if err := fs.Stat(pid, &s); err != nil {
			t.Fatal(err)
		}
		if s.State == 'S' && string(s.Comm) == "sleep" || time.Now().After(deadline) {
			break
		}
	}
	if string(s.Comm) != "sleep" || s.PPID != os.Getpid() || s.NumThreads != 1 || s.RSS <= 0 || s.VSize == 0 || s.StartTime == 0 {
		t.Fatalf("stat of sleep: %+v", s)
	}
	var st Status
	if err := fs.Status(pid, &st); err != nil {
		t.Fatal(err)
	}
	var io IO
	if err := fs.IO(pid, &io); err != nil && !IsPermission(err) {
		t.Fatal(err)
	}
	n, err := fs.FDs(pid)
	if err != nil || n < 3 {
		t.Fatalf("FDs = %d, %v; want stdin, stdout, stderr at least", n, err)
	}
	lim, err := fs.MaxFDs(pid)
	if err != nil || lim == 0 {
		t.Fatalf("MaxFDs = %d, %v", lim, err)
	}
	cl, err := fs.Cmdline(pid)
	if err != nil || filepath.Base(cl) != "sleep 60" && cl != "sleep 60" {
		t.Fatalf("Cmdline = %q, %v", cl, err)
	}
	ns, err := fs.NetNS(pid)
	self, err2 := fs.NetNS(os.Getpid())
	if err != nil || err2 != nil || ns == 0 || ns != self {
		t.Fatalf("NetNS = %d (%v), own %d (%v)", ns, err, self, err2)
	}
	if _, _, err := fs.NetDev(pid); err != nil {
		t.Fatal(err)
	}
	if bt, err := fs.BootTime(); err != nil || bt == 0 {
		t.Fatalf("BootTime = %d, %v", bt, err)
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	for name, err := range map[string]error{
		"stat":   fs.Stat(pid, &s),
		"status": fs.Status(pid, &st),
		"io":     fs.IO(pid, &io),
	} {
		if !IsGone(err) {
			t.Errorf("%s of a gone process: %v, want IsGone", name, err)
		}
	}
	if _, err := fs.FDs(pid); !IsGone(err) {
		t.Errorf("FDs of a gone process: %v, want IsGone", err)
	}
}

func TestBigFile(t *testing.T) {
	// /proc/self/status is over a kilobyte; a small buffer must grow.
	fs, err := NewFS("/proc")
	if err != nil {
		t.Fatal(err)
	}
	fs.buf = make([]byte, 16)
	var st Status
	if err := fs.Status(os.Getpid(), &st); err != nil {
		t.Fatal(err)
	}
	if st.VoluntaryCtxtSwitches+st.NonvoluntaryCtxtSwitches == 0 {
		t.Fatalf("status of self: %+v", st)
	}
}
