//go:build linux

package fallback

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Cross-process tests re-execute the test binary as the sender: the child
// runs TestHelperProcess with SHMLANE_FALLBACK_HELPER naming its role, its
// endpoint at fd 3 or at the path in SHMLANE_FALLBACK_PATH, and sends
// SHMLANE_FALLBACK_COUNT generated messages.

const (
	helperEnv = "SHMLANE_FALLBACK_HELPER"
	pathEnv   = "SHMLANE_FALLBACK_PATH"
	countEnv  = "SHMLANE_FALLBACK_COUNT"
	procSeed  = 0xc0ffee
)

func startHelper(t *testing.T, role, path string, count int, extra *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, pathEnv+"="+path, countEnv+"="+strconv.Itoa(count))
	if extra != nil {
		cmd.ExtraFiles = []*os.File{extra}
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

var helpers = map[string]func() (Sender, error){
	"pipe": func() (Sender, error) { return NewPipeSender(os.NewFile(3, "pipe")) },
	"fifo": func() (Sender, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return OpenFIFOSender(ctx, os.Getenv(pathEnv))
	},
	"unix": func() (Sender, error) { return NewUnixConn(os.NewFile(3, "socket")) },
}

func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("helper process for cross-process tests")
	}
	if err := runHelper(role); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runHelper(role string) error {
	open, ok := helpers[role]
	if !ok {
		return fmt.Errorf("unknown role %q", role)
	}
	count, err := strconv.ParseUint(os.Getenv(countEnv), 10, 64)
	if err != nil {
		return err
	}
	s, err := open()
	if err != nil {
		return err
	}
	s.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, maxGenSize)
	for seq := range count {
		if err := s.Send(genMsg(buf, procSeed, seq)); err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
	}
	return s.Close()
}

func TestCrossProcess(t *testing.T) {
	count := 100_000
	if testing.Short() {
		count = 10_000
	}
	t.Run("name=pipe", func(t *testing.T) {
		rf, wf, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := startHelper(t, "pipe", "", count, wf)
		wf.Close()
		r, err := NewPipeReceiver(rf)
		if err != nil {
			t.Fatal(err)
		}
		receiveGenerated(t, r, cmd, count)
	})
	t.Run("name=fifo", func(t *testing.T) {
		path := newFIFO(t)
		r, err := OpenFIFOReceiver(testContext(t), path)
		if err != nil {
			t.Fatal(err)
		}
		cmd := startHelper(t, "fifo", path, count, nil)
		receiveGenerated(t, r, cmd, count)
	})
	t.Run("name=unix", func(t *testing.T) {
		r, child, err := NewUnixPair(nil)
		if err != nil {
			t.Fatal(err)
		}
		f, err := child.File()
		if err != nil {
			t.Fatal(err)
		}
		child.Close()
		cmd := startHelper(t, "unix", "", count/10, f)
		f.Close()
		receiveGenerated(t, r, cmd, count/10)
	})
}

func receiveGenerated(t *testing.T, r Receiver, cmd *exec.Cmd, count int) {
	t.Helper()
	defer r.Close()
	defer func() {
		if t.Failed() {
			cmd.Process.Kill()
		}
		if err := cmd.Wait(); err != nil && !t.Failed() {
			t.Errorf("sender process: %v", err)
		}
	}()
	r.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, maxGenSize)
	for seq := range uint64(count) {
		n, err := r.Recv(buf)
		if err != nil {
			t.Fatalf("Recv() of message %d = %v", seq, err)
		}
		if err := checkMsg(buf[:n], procSeed, seq); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r.Recv(buf); err != io.EOF {
		t.Fatalf("Recv() after %d messages = %d, %v; want io.EOF", count, n, err)
	}
}
