//go:build linux

package shmlane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	helpers["dial-hang"] = helperDialHang
	helpers["listen-watch"] = helperListenWatch
}

// needNamespaces skips t unless this process may create namespaces.
func needNamespaces(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: new pid and IPC namespaces need CAP_SYS_ADMIN (run the tests as root)")
	}
}

// TestNamespacesDialer runs the dialer in new namespaces, as a container
// beside the listener would: in a new IPC namespace, a new pid namespace
// (as unshare --pid --fork does: the dialer is pid 1 there and sees the
// listener as pid 0), and both. The connection uses shared memory all the
// same, carries a message each way, and the listener learns of the
// dialer's death through the pidfd.
func TestNamespacesDialer(t *testing.T) {
	needNamespaces(t)
	for _, ns := range []struct {
		name  string
		flags uintptr
	}{
		{"ipc", syscall.CLONE_NEWIPC},
		{"pid", syscall.CLONE_NEWPID},
		{"pid+ipc", syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC},
	} {
		t.Run(ns.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Listen("ns", &ListenOptions{RuntimeDir: dir, RequireSharedMemory: true})
			must(t, err)
			defer l.Close()
			ch := startChild(t, "", "dial-hang", map[string]string{"DIR": dir, "NAME": "ns"},
				&syscall.SysProcAttr{Cloneflags: ns.flags})
			c := acceptOne(t, l)
			if c.FellBack() || c.Transport() != "ring" {
				t.Fatalf("listener's end: transport %q, fell back: %q", c.Transport(), c.FallbackReason())
			}
			report := ch.line(t, 20*time.Second)
			if ns.flags&syscall.CLONE_NEWPID != 0 {
				// The dialer is pid 1 of its namespace; this side sees
				// its real pid, it sees this side as pid 0.
				if report != "ring peerpid=0" {
					t.Fatalf("dialer reported %q, want \"ring peerpid=0\"", report)
				}
			} else if report != "ring peerpid="+strconv.Itoa(os.Getpid()) {
				t.Fatalf("dialer reported %q, want a ring connection to pid %d", report, os.Getpid())
			}
			if c.PeerPID() != ch.cmd.Process.Pid {
				t.Errorf("PeerPID() = %d, want the dialer's pid %d", c.PeerPID(), ch.cmd.Process.Pid)
			}
			buf := make([]byte, 16)
			if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "hi" {
				t.Fatalf("Recv() = %q, %v", buf[:n], err)
			}
			must(t, c.Send([]byte("ho")))
			if got := ch.line(t, 20*time.Second); got != "got ho" {
				t.Fatalf("dialer reported %q, want \"got ho\"", got)
			}
			ch.cmd.Process.Kill()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Recv(buf); !errors.Is(err, ErrPeerGone) {
				t.Fatalf("Recv() after the dialer was killed = %v, want ErrPeerGone", err)
			}
		})
	}
}

// TestNamespacesWithoutPeerPidfd plays a kernel without SO_PEERPIDFD in a
// dialer in a new pid namespace: the listener's pid is 0 there, so it
// could not tell the listener's death, and the connection falls back to
// the socket, saying why on both ends.
func TestNamespacesWithoutPeerPidfd(t *testing.T) {
	needNamespaces(t)
	dir := t.TempDir()
	l, err := Listen("old", &ListenOptions{RuntimeDir: dir})
	must(t, err)
	defer l.Close()
	ch := startChild(t, "", "dial-report", map[string]string{"DIR": dir, "NAME": "old", "NOPIDFD": "1"},
		&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})
	c := acceptOne(t, l)
	const want = "the listener's pid is not visible in the dialer's pid namespace and this kernel has no SO_PEERPIDFD"
	if !c.FellBack() || !strings.Contains(c.FallbackReason(), want) {
		t.Fatalf("listener's end: FellBack() = %v, FallbackReason() = %q, want one containing %q", c.FellBack(), c.FallbackReason(), want)
	}
	if got := ch.line(t, 20*time.Second); !strings.HasPrefix(got, "unix: "+want) {
		t.Fatalf("dialer reported %q, want a unix connection because %q", got, want)
	}
	buf := make([]byte, 16)
	if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("Recv() = %q, %v", buf[:n], err)
	}
	if err := ch.wait(t, 20*time.Second); err != nil {
		t.Fatalf("helper: %v; stderr:\n%s", err, ch.stderr)
	}
}

// helperDialHang dials with RequireSharedMemory, reports the transport and
// the listener's pid as it sees it, sends "hi", reports what it receives,
// and waits to be killed.
func helperDialHang() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, helperVar("NAME"), &DialOptions{RuntimeDir: helperVar("DIR"), RequireSharedMemory: true})
	if err != nil {
		return err
	}
	fmt.Printf("%s peerpid=%d\n", c.Transport(), c.PeerPID())
	if err := c.Send([]byte("hi")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Recv(buf)
	if err != nil {
		return err
	}
	fmt.Printf("got %s\n", buf[:n])
	_, err = c.Recv(buf)
	return fmt.Errorf("Recv() while waiting to be killed = %v", err)
}

// TestNamespacesListener runs the listener in a new pid namespace, where
// the dialers' pids are not visible (SO_PEERCRED gives 0), and a dialer
// outside it: the connection uses shared memory, and when the dialer is
// killed the listener learns it through the pidfd of SO_PEERPIDFD.
func TestNamespacesListener(t *testing.T) {
	needNamespaces(t)
	dir := t.TempDir()
	lis := startChild(t, "", "listen-watch", map[string]string{"DIR": dir, "NAME": "nsl"},
		&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC})
	if got := lis.line(t, 20*time.Second); got != "ready" {
		t.Fatalf("listener reported %q, want ready; stderr:\n%s", got, lis.stderr)
	}
	dialer := startChild(t, "", "dial-hang", map[string]string{"DIR": dir, "NAME": "nsl"}, nil)
	if got, want := dialer.line(t, 20*time.Second), "ring peerpid="+strconv.Itoa(lis.cmd.Process.Pid); got != want {
		t.Fatalf("dialer reported %q, want %q", got, want)
	}
	if got := lis.line(t, 20*time.Second); got != "ring peerpid=0" {
		t.Fatalf("listener reported %q, want \"ring peerpid=0\"", got)
	}
	if got := dialer.line(t, 20*time.Second); got != "got ho" {
		t.Fatalf("dialer reported %q, want \"got ho\"", got)
	}
	dialer.cmd.Process.Kill()
	if got := lis.line(t, 20*time.Second); got != "peer gone" {
		t.Fatalf("listener reported %q after the dialer was killed, want \"peer gone\"; stderr:\n%s", got, lis.stderr)
	}
	if err := lis.wait(t, 20*time.Second); err != nil {
		t.Fatalf("listener: %v; stderr:\n%s", err, lis.stderr)
	}
}

// helperListenWatch listens with RequireSharedMemory, accepts one
// connection, reports its transport and the dialer's pid as seen here,
// answers "hi" with "ho", and reports how the stream ends.
func helperListenWatch() error {
	l, err := Listen(helperVar("NAME"), &ListenOptions{RuntimeDir: helperVar("DIR"), RequireSharedMemory: true})
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("ready")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := l.Accept(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("%s peerpid=%d\n", c.Transport(), c.PeerPID())
	buf := make([]byte, 16)
	if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "hi" {
		return fmt.Errorf("Recv() = %q, %v, want \"hi\"", buf[:n], err)
	}
	if err := c.Send([]byte("ho")); err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = c.Recv(buf)
	switch {
	case errors.Is(err, ErrPeerGone):
		fmt.Println("peer gone")
		return nil
	case err == io.EOF:
		fmt.Println("eof")
		return nil
	}
	return fmt.Errorf("Recv() after the dialer was killed = %v", err)
}

// TestRequireSharedMemory: a side that requires shared memory turns the
// other side's forced fallback into ErrNoSharedMemory on both ends, with
// the reason.
func TestRequireSharedMemory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen ListenOptions
		dial   DialOptions
		reason string
	}{
		{"listener-requires", ListenOptions{RequireSharedMemory: true}, DialOptions{ForceFallback: true}, "forced by the dialer"},
		{"dialer-requires", ListenOptions{ForceFallback: true}, DialOptions{RequireSharedMemory: true}, "forced by the listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.listen.RuntimeDir, tc.dial.RuntimeDir = dir, dir
			l, err := Listen("req", &tc.listen)
			must(t, err)
			defer l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = Dial(ctx, "req", &tc.dial)
			if !errors.Is(err, ErrNoSharedMemory) || !errors.Is(err, ErrHandshake) {
				t.Fatalf("Dial() = %v, want ErrNoSharedMemory and ErrHandshake", err)
			}
			errContains(t, "Dial()", err, tc.reason)
			_, err = l.Accept(ctx)
			if !errors.Is(err, ErrNoSharedMemory) && !strings.Contains(err.Error(), "shared memory") {
				t.Fatalf("Accept() = %v, want a report that shared memory was required", err)
			}
			errContains(t, "Accept()", err, tc.reason)
		})
	}
	if _, err := Listen("x", &ListenOptions{RuntimeDir: t.TempDir(), ForceFallback: true, RequireSharedMemory: true}); err == nil {
		t.Error("Listen with ForceFallback and RequireSharedMemory succeeded")
	}
	if _, err := Dial(context.Background(), "x", &DialOptions{RuntimeDir: t.TempDir(), ForceFallback: true, RequireSharedMemory: true}); err == nil || errors.Is(err, ErrNoListener) {
		t.Errorf("Dial with ForceFallback and RequireSharedMemory = %v, want an option error", err)
	}
}
