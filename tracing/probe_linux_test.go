package tracing

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// The helper process is this test binary run again with helperEnv set; see
// TestHelperProcess for its modes.
const (
	helperEnv  = "SHMLANE_TRACING_HELPER"
	helperNEnv = "SHMLANE_TRACING_HELPER_N"
)

// getppid makes n getppid system calls, none of them answered from a cache.
func getppid(n int) {
	for range n {
		unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
	}
}

// TestHelperProcess is not a test: it is the body of the helper process.
// Modes, from helperEnv, with n from helperNEnv:
//
// Modes that wait for a byte on stdin first print "ready" on stdout.
//
//	getppid       wait for a byte on stdin, make n getppid calls, exit
//	getppid-now   make n getppid calls at once, exit
//	tree          wait for a byte on stdin, run "getppid-now" as a child,
//	              print its pid, wait for it, exit
//	exec          wait for a byte on stdin, make 100 getppid calls, exec
//	              "getppid-now" in the same process
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	n, err := strconv.Atoi(os.Getenv(helperNEnv))
	if err != nil {
		helperFail(err)
	}
	switch mode {
	case "getppid":
		waitGoAhead()
		getppid(n)
	case "getppid-now":
		getppid(n)
	case "tree":
		waitGoAhead()
		cmd := helperCommand("getppid-now", n)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			helperFail(err)
		}
		fmt.Println(cmd.Process.Pid)
		if err := cmd.Wait(); err != nil {
			helperFail(err)
		}
	case "exec":
		waitGoAhead()
		getppid(100)
		os.Setenv(helperEnv, "getppid-now")
		helperFail(syscall.Exec(os.Args[0], os.Args, os.Environ()))
	default:
		helperFail(fmt.Errorf("unknown mode %q", mode))
	}
	os.Exit(0)
}

// waitGoAhead says "ready" on stdout, then waits for a byte on stdin.
func waitGoAhead() {
	fmt.Println("ready")
	var b [1]byte
	if _, err := io.ReadFull(os.Stdin, b[:]); err != nil {
		helperFail(fmt.Errorf("wait for go-ahead: %w", err))
	}
}

func helperFail(err error) {
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(1)
}

func helperCommand(mode string, n int) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperNEnv+"="+strconv.Itoa(n))
	return cmd
}

// helper is a running helper process that waits for its go-ahead.
type helper struct {
	cmd    *exec.Cmd
	gate   io.WriteCloser
	stdout *bufio.Reader
	stderr strings.Builder
}

func startHelper(t *testing.T, mode string, n int) *helper {
	t.Helper()
	h := &helper{cmd: helperCommand(mode, n)}
	h.cmd.Stderr = &h.stderr
	var err error
	if h.gate, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.stdout = bufio.NewReader(out)
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			h.cmd.Process.Kill()
			h.cmd.Wait()
		}
	})
	// Once it is ready, its execve is over, also as the probe sees it
	// (Start returns a little earlier), so AfterExec waits for the next.
	if line, err := h.stdout.ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper did not get ready: %q, %v (stderr: %s)", line, err, h.stderr.String())
	}
	return h
}

func (h *helper) pid() int { return h.cmd.Process.Pid }

func (h *helper) goAhead(t *testing.T) {
	t.Helper()
	if _, err := h.gate.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	h.gate.Close()
}

// readPID reads a pid the helper printed.
func (h *helper) readPID(t *testing.T) int {
	t.Helper()
	line, err := h.stdout.ReadString('\n')
	if err != nil {
		t.Fatalf("read child pid: %v (stderr: %s)", err, h.stderr.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func (h *helper) wait(t *testing.T) {
	t.Helper()
	if _, err := io.Copy(io.Discard, h.stdout); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper: %v (stderr: %s)", err, h.stderr.String())
	}
}

// startProbe starts a probe, or skips the test where this machine cannot
// run one.
func startProbe(tb testing.TB, opts *Options) *Probe {
	tb.Helper()
	p, err := Start(opts)
	switch {
	case errors.Is(err, ErrPermission):
		tb.Skipf("skipping: needs root or CAP_BPF: %v", err)
	case errors.Is(err, ErrNotSupported):
		tb.Skipf("skipping: kernel cannot run the probe: %v", err)
	case err != nil:
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func snapshot(t *testing.T, p *Probe) Counts {
	t.Helper()
	c, err := p.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWatchCountsExactly(t *testing.T) {
	const n = 1234
	p := startProbe(t, nil)
	h := startHelper(t, "getppid", n)
	if err := p.Watch(h.pid()); err != nil {
		t.Fatal(err)
	}
	h.goAhead(t)
	getppid(777) // this process is not watched
	h.wait(t)

	c := snapshot(t, p)
	if got := c.Syscall(h.pid(), unix.SYS_GETPPID); got != n {
		t.Errorf("getppid calls of the helper = %d, want %d", got, n)
	}
	if got, min := c.Total(h.pid()), uint64(n+1); got < min {
		t.Errorf("Total(helper) = %d, want at least %d (getppid and exit_group)", got, min)
	}
	if pc, ok := c.ByPID[os.Getpid()]; ok {
		t.Errorf("unwatched test process counted: %v", pc)
	}
	if len(c.ByPID) != 1 {
		t.Errorf("counts for %d processes, want 1: %v", len(c.ByPID), c.ByPID)
	}
	if c.Dropped != 0 {
		t.Errorf("Dropped = %d, want 0", c.Dropped)
	}
}

func TestWatchTree(t *testing.T) {
	const m = 567
	p := startProbe(t, nil)
	h := startHelper(t, "tree", m)
	if err := p.WatchTree(h.pid()); err != nil {
		t.Fatal(err)
	}
	h.goAhead(t)
	grandchild := h.readPID(t)
	h.wait(t)

	c := snapshot(t, p)
	if got := c.Syscall(grandchild, unix.SYS_GETPPID); got != m {
		t.Errorf("getppid calls of the grandchild = %d, want %d", got, m)
	}
	if got := c.Syscall(h.pid(), unix.SYS_GETPPID); got != 0 {
		t.Errorf("getppid calls of the child = %d, want 0", got)
	}
	if got := c.Syscall(h.pid(), unix.SYS_EXECVE) + c.Syscall(grandchild, unix.SYS_EXECVE); got == 0 {
		t.Errorf("no execve counted for the child or grandchild: %v", c.ByPID)
	}
	if c.LostChildren != 0 {
		t.Errorf("LostChildren = %d, want 0", c.LostChildren)
	}
}

func TestWatchAfterExec(t *testing.T) {
	const n = 321
	p := startProbe(t, nil)
	if p.execErr != nil {
		t.Skipf("skipping: kernel lacks the sched_process_exec raw tracepoint: %v", p.execErr)
	}
	h := startHelper(t, "exec", n)
	if err := p.WatchWith(h.pid(), &WatchOptions{AfterExec: true}); err != nil {
		t.Fatal(err)
	}
	h.goAhead(t)
	h.wait(t)

	c := snapshot(t, p)
	if got := c.Syscall(h.pid(), unix.SYS_GETPPID); got != n {
		t.Errorf("getppid calls after execve = %d, want %d (100 more were made before it)", got, n)
	}
	if got := c.Syscall(h.pid(), unix.SYS_EXECVE); got != 0 {
		t.Errorf("execve calls = %d, want 0: the execve that starts counting is not counted", got)
	}
}

func TestWatchDoesNotFollowChildren(t *testing.T) {
	p := startProbe(t, nil)
	h := startHelper(t, "tree", 100)
	if err := p.Watch(h.pid()); err != nil {
		t.Fatal(err)
	}
	h.goAhead(t)
	grandchild := h.readPID(t)
	h.wait(t)

	c := snapshot(t, p)
	if pc, ok := c.ByPID[grandchild]; ok {
		t.Errorf("grandchild of a process watched without its children counted: %v", pc)
	}
	if c.Total(h.pid()) == 0 {
		t.Errorf("watched child not counted")
	}
}

func TestExitStopsWatching(t *testing.T) {
	p := startProbe(t, nil)
	if p.treeErr != nil {
		t.Skipf("skipping: kernel BTF needed to notice exits: %v", p.treeErr)
	}
	h := startHelper(t, "tree", 10)
	if err := p.WatchTree(h.pid()); err != nil {
		t.Fatal(err)
	}
	if pids, err := p.Watched(); err != nil || !slices.Contains(pids, h.pid()) {
		t.Fatalf("Watched() = %v, %v; want it to hold %d", pids, err, h.pid())
	}
	h.goAhead(t)
	grandchild := h.readPID(t)
	h.wait(t)

	pids, err := p.Watched()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(pids, h.pid()) || slices.Contains(pids, grandchild) {
		t.Errorf("Watched() = %v after pids %d and %d exited", pids, h.pid(), grandchild)
	}
	if c := snapshot(t, p); c.Syscall(grandchild, unix.SYS_GETPPID) != 10 {
		t.Errorf("counts lost at exit: %v", c.ByPID)
	}
}

func TestUnwatchAndReset(t *testing.T) {
	p := startProbe(t, nil)
	pid := os.Getpid()
	if err := p.Watch(pid); err != nil {
		t.Fatal(err)
	}
	getppid(50)
	if err := p.Unwatch(pid); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, p)
	if got := before.Syscall(pid, unix.SYS_GETPPID); got != 50 {
		t.Errorf("getppid calls while watched = %d, want 50", got)
	}
	getppid(50)
	after := snapshot(t, p)
	if d := after.Sub(before); len(d.ByPID) != 0 {
		t.Errorf("counted after Unwatch: %v", d.ByPID)
	}
	if err := p.Unwatch(pid); err != nil {
		t.Errorf("second Unwatch: %v", err)
	}

	if err := p.Reset(); err != nil {
		t.Fatal(err)
	}
	if c := snapshot(t, p); len(c.ByPID) != 0 || c.Dropped != 0 {
		t.Errorf("Snapshot after Reset = %+v, want nothing", c)
	}
}

func TestWatchErrors(t *testing.T) {
	p := startProbe(t, nil)
	for _, pid := range []int{0, -1, math.MaxInt} {
		if err := p.Watch(pid); err == nil {
			t.Errorf("Watch(%d) succeeded", pid)
		}
	}
	// A reaped child's pid names no process, at least for a moment.
	cmd := helperCommand("getppid-now", 0)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := p.Watch(cmd.Process.Pid); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Watch(exited pid) = %v, want ESRCH", err)
	}
}

func TestDropped(t *testing.T) {
	p := startProbe(t, &Options{MaxCounters: 1})
	h := startHelper(t, "getppid", 10)
	if err := p.Watch(h.pid()); err != nil {
		t.Fatal(err)
	}
	h.goAhead(t)
	h.wait(t)
	c := snapshot(t, p)
	if len(c.ByPID[h.pid()].BySyscall) != 1 {
		t.Errorf("BySyscall = %v, want one entry", c.ByPID[h.pid()].BySyscall)
	}
	if c.Dropped == 0 {
		t.Errorf("Dropped = 0 with room for one counter")
	}
}

func TestWithoutBTF(t *testing.T) {
	b, err := btf.NewBuilder([]btf.Type{&btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	p := startProbe(t, &Options{KernelTypes: spec})
	if err := p.WatchTree(os.Getpid()); !errors.Is(err, ErrNotSupported) {
		t.Errorf("WatchTree without task_struct in BTF = %v, want ErrNotSupported", err)
	}
	if err := p.Watch(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	getppid(20)
	if got := snapshot(t, p).Syscall(os.Getpid(), unix.SYS_GETPPID); got != 20 {
		t.Errorf("getppid calls = %d, want 20", got)
	}
}

func TestClose(t *testing.T) {
	p := startProbe(t, nil)
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.Snapshot(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Snapshot after Close = %v, want os.ErrClosed", err)
	}
	for name, err := range map[string]error{
		"Watch":     p.Watch(os.Getpid()),
		"WatchTree": p.WatchTree(os.Getpid()),
		"Unwatch":   p.Unwatch(os.Getpid()),
		"Reset":     p.Reset(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, err := p.Watched(); !errors.Is(err, ErrClosed) {
		t.Errorf("Watched after Close = %v, want ErrClosed", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	p := startProbe(t, nil)
	pid := os.Getpid()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				switch (g + i) % 5 {
				case 0:
					err = p.Watch(pid)
				case 1:
					err = p.Unwatch(pid)
				case 2:
					_, err = p.Snapshot()
				case 3:
					err = p.Reset()
				case 4:
					_, err = p.Watched()
				}
				getppid(1)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestStartOptions(t *testing.T) {
	for _, opts := range []*Options{{MaxProcesses: -1}, {MaxCounters: -5}} {
		if p, err := Start(opts); err == nil {
			p.Close()
			t.Errorf("Start(%+v) succeeded", *opts)
		}
	}
}

func TestMemberOffset(t *testing.T) {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	atomic := &btf.Typedef{Name: "atomic_t", Type: &btf.Struct{Size: 4, Members: []btf.Member{{Name: "counter", Type: i32}}}}
	s := &btf.Struct{Name: "signal_struct", Size: 32, Members: []btf.Member{
		{Name: "a", Type: i32, Offset: 0},
		{Type: &btf.Union{Size: 8, Members: []btf.Member{
			{Name: "b", Type: i32},
			{Type: &btf.Struct{Size: 8, Members: []btf.Member{
				{Name: "c", Type: i32},
				{Name: "live", Type: atomic, Offset: 32},
			}}},
		}}, Offset: 64},
	}}
	b, err := btf.NewBuilder([]btf.Type{s}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	off, size, err := memberOffset(spec, "signal_struct", "live", "counter")
	if err != nil || off != 12 || size != 4 {
		t.Errorf("memberOffset(live.counter) = %d, %d, %v; want 12, 4, nil", off, size, err)
	}
	if _, _, err := memberOffset(spec, "signal_struct", "nope"); err == nil {
		t.Errorf("memberOffset of a missing member succeeded")
	}
}

func BenchmarkGetppid(b *testing.B) {
	b.Run("probe=off", func(b *testing.B) {
		for b.Loop() {
			unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
		}
	})
	b.Run("probe=unwatched", func(b *testing.B) {
		startProbe(b, nil)
		for b.Loop() {
			unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
		}
	})
	b.Run("probe=watched", func(b *testing.B) {
		p := startProbe(b, nil)
		if err := p.Watch(os.Getpid()); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
		}
		b.StopTimer()
		c, err := p.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(c.Syscall(os.Getpid(), unix.SYS_GETPPID))/float64(b.N), "counted/op")
	})
}
