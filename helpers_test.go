//go:build linux

package shmlane

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cross-process tests re-execute the test binary as the peer: the child
// runs TestHelperProcess with SHMLANE_TEST_HELPER naming its role and the
// rest of its parameters in SHMLANE_TEST_* variables. It reports on its
// standard output, one line at a time.

const helperEnv = "SHMLANE_TEST_HELPER"

// helpers are the roles a child process can play.
var helpers = map[string]func() error{}

func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("helper process for cross-process tests")
	}
	fn, ok := helpers[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown helper role %q\n", role)
		os.Exit(2)
	}
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// helperVar reads a parameter of the helper.
func helperVar(key string) string { return os.Getenv("SHMLANE_TEST_" + key) }

func helperInt(key string) int {
	var n int
	fmt.Sscan(helperVar(key), &n)
	return n
}

// child is a helper process.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	exited chan error
}

// startChild starts the test binary exe (os.Args[0] if empty) as a helper
// in role, with vars as SHMLANE_TEST_* variables and attr, if not nil, as
// its SysProcAttr. It is killed at the end of the test if still running.
func startChild(t testing.TB, exe, role string, vars map[string]string, attr *syscall.SysProcAttr) *child {
	t.Helper()
	if exe == "" {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	for k, v := range vars {
		cmd.Env = append(cmd.Env, "SHMLANE_TEST_"+k+"="+v)
	}
	cmd.SysProcAttr = attr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 16), stderr: new(bytes.Buffer), exited: make(chan error, 1)}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", role, err)
	}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
		c.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("helper %s did not exit after SIGKILL", role)
		}
	})
	return c
}

// line waits for the child's next line of output.
func (c *child) line(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("helper exited before reporting; stderr:\n%s", c.stderr)
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("no report from the helper within %v; stderr:\n%s", timeout, c.stderr)
	}
	return ""
}

// wait waits for the child to exit and returns its error.
func (c *child) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	for range c.lines {
	}
	select {
	case err := <-c.exited:
		c.exited <- err // for the cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("helper did not exit within %v; stderr:\n%s", timeout, c.stderr)
	}
	return nil
}

// kill sends SIGKILL and waits until the child is reaped.
func (c *child) kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait(t, 10*time.Second)
}

// helperDial dials as the helper's parameters say.
func helperDial() (*Conn, error) {
	if helperVar("NOPIDFD") != "" {
		usePeerPidfd = false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return Dial(ctx, helperVar("NAME"), &DialOptions{
		RuntimeDir:    helperVar("DIR"),
		ForceFallback: helperVar("MODE") == "fallback",
	})
}

// msgGen produces a deterministic sequence of messages of random sizes in
// [0, maxSize]: windows of a pool of random bytes at random offsets, so
// that the sender copies nothing and the receiver can compare every byte.
type msgGen struct {
	pool    []byte
	rng     *rand.Rand
	maxSize int
}

func newMsgGen(seed uint64, maxSize int) *msgGen {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	pool := make([]byte, 1<<20)
	for i := 0; i < len(pool); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			pool[i+j] = byte(v >> (8 * j))
		}
	}
	return &msgGen{pool: pool, rng: r, maxSize: maxSize}
}

func (g *msgGen) next() []byte {
	n := g.rng.IntN(g.maxSize + 1)
	off := g.rng.IntN(len(g.pool) - g.maxSize)
	return g.pool[off : off+n]
}

// seqMsg fills b with a message carrying sequence number i.
func seqMsg(b []byte, i uint64) []byte {
	for j := range b {
		b[j] = byte(i >> (8 * (j % 8)))
	}
	return b
}

// checkSeq reports whether b carries sequence number i.
func checkSeq(b []byte, i uint64) bool {
	for j := range b {
		if b[j] != byte(i>>(8*(j%8))) {
			return false
		}
	}
	return true
}

// must fails the test if err is not nil.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// errContains fails the test unless err's message holds every part.
func errContains(t testing.TB, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want one containing %q", what, parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not contain %q", what, err, p)
		}
	}
}

// watchSelf is a pidWatch on this process, for a fallback Conn whose peer
// is this process; nil if pidfds are not available.
func watchSelf() *pidWatch {
	w, err := watchPID(os.Getpid())
	if err != nil {
		return nil
	}
	return w
}
