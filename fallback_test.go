//go:build linux

package shmlane

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	helpers["dial-report"] = helperDialReport
	helpers["listen-nomem"] = helperListenNoMem
}

// helperDialReport: dial, report the transport and fallback reason, send
// "hi", close.
func helperDialReport() error {
	c, err := helperDial()
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s\n", c.Transport(), c.FallbackReason())
	if err := c.Send([]byte("hi")); err != nil {
		return err
	}
	return c.Close()
}

// TestFallbackNoSharedMemory runs a listener that cannot map a segment (its
// address space is limited below the ring's size): the connection falls
// back to the socket and carries messages both ways.
func TestFallbackNoSharedMemory(t *testing.T) {
	dir := t.TempDir()
	ch := startChild(t, "", "listen-nomem", map[string]string{"DIR": dir, "NAME": "nomem"}, nil)
	if got := ch.line(t, 20*time.Second); got != "ready" {
		t.Fatalf("helper reported %q, want \"ready\"; stderr:\n%s", got, ch.stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, "nomem", &DialOptions{RuntimeDir: dir})
	must(t, err)
	defer c.Close()
	const want = "the listener cannot create shared memory"
	if !c.FellBack() || !strings.Contains(c.FallbackReason(), want) {
		t.Fatalf("FellBack() = %v, FallbackReason() = %q, want one containing %q", c.FellBack(), c.FallbackReason(), want)
	}
	t.Logf("fallback reason: %s", c.FallbackReason())
	must(t, c.Send([]byte("ping")))
	buf := make([]byte, 16)
	if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Recv() = %q, %v, want \"pong\"", buf[:n], err)
	}
	if got := ch.line(t, 20*time.Second); !strings.HasPrefix(got, "unix: "+want) {
		t.Fatalf("listener's end reported %q", got)
	}
	must(t, c.Close())
	if err := ch.wait(t, 20*time.Second); err != nil {
		t.Fatalf("helper: %v; stderr:\n%s", err, ch.stderr)
	}
}

// helperListenNoMem limits its address space to 256 MiB above what it
// uses, listens with 1 GiB rings, answers one "ping" with "pong" and
// reports how its end was set up.
func helperListenNoMem() error {
	vm, err := vmSize()
	if err != nil {
		return err
	}
	limit := vm + 256<<20
	if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		return fmt.Errorf("limit address space: %w", err)
	}
	l, err := Listen(helperVar("NAME"), &ListenOptions{RuntimeDir: helperVar("DIR"), Capacity: 1 << 30})
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
	buf := make([]byte, 16)
	if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "ping" {
		return fmt.Errorf("Recv() = %q, %v, want \"ping\"", buf[:n], err)
	}
	if err := c.Send([]byte("pong")); err != nil {
		return err
	}
	fmt.Printf("%s: %s\n", c.Transport(), c.FallbackReason())
	if _, err := c.Recv(buf); err == nil {
		return fmt.Errorf("Recv() after the peer closed gave a message")
	}
	return nil
}

// vmSize reads this process's virtual memory size from /proc.
func vmSize() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmSize:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmSize in /proc/self/status")
}
