//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
)

// TestCLI builds the command once and runs send, recv and inspect as a
// user would, each a separate process, meeting by name in a private
// runtime directory (XDG_RUNTIME_DIR).
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds the command and moves 64 MiB (drop -short to run)")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			t.Skip("skipping: no go command to build shmlane with (put go in PATH)")
		}
	}
	bin := filepath.Join(t.TempDir(), "shmlane")
	build := exec.Command(gobin, "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cli := &cliRunner{bin: bin}

	t.Run("hello", func(t *testing.T) {
		env := cli.env(t)
		recv := cli.start(t, env, nil, "recv", "demo")
		send := cli.start(t, env, strings.NewReader("hello\n"), "send", "demo")
		send.mustSucceed(t)
		recv.mustSucceed(t)
		if got := recv.stdout.String(); got != "hello\n" {
			t.Errorf("recv printed %q, want %q", got, "hello\n")
		}
	})

	t.Run("stream", func(t *testing.T) {
		size := int64(64 << 20)
		if os.Getenv("SHMLANE_LONG") == "1" {
			size = 1 << 30
		}
		for _, flags := range [][]string{nil, {"-fallback"}} {
			name := "ring"
			if flags != nil {
				name = "fallback"
			}
			t.Run(name, func(t *testing.T) {
				env := cli.env(t)
				in, sent := randomStream(size, 42)
				recvOut := sha256.New()
				recv := cli.startTo(t, env, nil, recvOut, append([]string{"recv"}, append(flags, "bulk")...)...)
				start := time.Now()
				send := cli.start(t, env, in, append([]string{"send"}, append(flags, "bulk")...)...)
				send.mustSucceed(t)
				recv.mustSucceed(t)
				el := time.Since(start)
				want := <-sent
				if got := recvOut.Sum(nil); !bytes.Equal(got, want) {
					t.Fatalf("sha256 of recv's output %x, of send's input %x", got, want)
				}
				t.Logf("%s: %d MiB through send | recv in %v (%.0f MiB/s)", name, size>>20, el.Round(time.Millisecond), float64(size>>20)/el.Seconds())
			})
		}
	})

	t.Run("lines", func(t *testing.T) {
		const input = "a\n\nbbb\nlast"
		for _, tc := range []struct {
			recvFlags []string
			want      string
		}{
			{[]string{"-lines"}, "a\n\nbbb\nlast\n"},
			{nil, "abbblast"}, // one message per line, newlines dropped
		} {
			env := cli.env(t)
			recv := cli.start(t, env, nil, append(append([]string{"recv"}, tc.recvFlags...), "lines")...)
			send := cli.start(t, env, strings.NewReader(input), "send", "-lines", "lines")
			send.mustSucceed(t)
			recv.mustSucceed(t)
			if got := recv.stdout.String(); got != tc.want {
				t.Errorf("send -lines | recv %s printed %q, want %q", tc.recvFlags, got, tc.want)
			}
		}
	})

	t.Run("listen-dial", func(t *testing.T) {
		env := cli.env(t)
		send := cli.start(t, env, strings.NewReader("one\ntwo\n"), "send", "-lines", "-listen", "swap")
		recv := cli.start(t, env, nil, "recv", "-lines", "-dial", "swap")
		send.mustSucceed(t)
		recv.mustSucceed(t)
		if got := recv.stdout.String(); got != "one\ntwo\n" {
			t.Errorf("recv -dial printed %q, want %q", got, "one\ntwo\n")
		}
	})

	t.Run("inspect", func(t *testing.T) {
		env := cli.env(t)
		recv := cli.start(t, env, nil, "recv", "-lines", "live")
		pr, pw := io.Pipe()
		send := cli.start(t, env, pr, "send", "-lines", "live")
		io.WriteString(pw, "one\ntwo\nthree\n")
		recv.waitOutput(t, "one\ntwo\nthree\n")
		insp := cli.start(t, env, nil, "inspect", "live")
		insp.mustSucceed(t)
		out := insp.stdout.String()
		t.Logf("shmlane inspect live:\n%s", out)
		for _, want := range []string{
			`listener "live": pid`, "1 connection", `connection 1: "ring"`,
			"dialer → listener", "listener → dialer", fmt.Sprintf(`magic "SHMLANE" version %d`, layout.Version),
			"capacity 1048576 size 1060864",
			"sent 3 messages (11 bytes)", "received 3 messages (11 bytes)",
			"fill 0 bytes (0.0%)",
			"oob       capacity 4096 urgent sent 0 received 0 flushes 0 discarded 0 messages (0 bytes)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("inspect output lacks %q", want)
			}
		}
		inspJSON := cli.start(t, env, nil, "inspect", "-json", "live")
		inspJSON.mustSucceed(t)
		var report struct {
			Conns []struct {
				Transport  string `json:"transport"`
				ToListener struct {
					Stats map[string]any `json:"stats"`
				} `json:"to_listener"`
			} `json:"conns"`
		}
		if err := json.Unmarshal([]byte(inspJSON.stdout.String()), &report); err != nil {
			t.Fatalf("inspect -json: %v\n%s", err, inspJSON.stdout.String())
		}
		if len(report.Conns) != 1 || report.Conns[0].Transport != "ring" || report.Conns[0].ToListener.Stats["sent_bytes"] != 11.0 {
			t.Errorf("inspect -json lacks conns[0] with transport ring and to_listener.stats.sent_bytes 11:\n%s", inspJSON.stdout.String())
		}
		pw.Close()
		send.mustSucceed(t)
		recv.mustSucceed(t)
	})

	t.Run("inspect-fallback", func(t *testing.T) {
		env := cli.env(t)
		recv := cli.start(t, env, nil, "recv", "-lines", "-fallback", "live")
		pr, pw := io.Pipe()
		send := cli.start(t, env, pr, "send", "-lines", "-fallback", "live")
		io.WriteString(pw, "one\ntwo\n")
		recv.waitOutput(t, "one\ntwo\n")
		insp := cli.start(t, env, nil, "inspect", "live")
		insp.mustSucceed(t)
		out := insp.stdout.String()
		t.Logf("shmlane inspect live:\n%s", out)
		for _, want := range []string{
			`connection 1: "unix"`, `fell back to the socket: "forced by the`,
			"out-of-band lane 4096 bytes each way (socket send buffer)",
			"listener → dialer: listener sent 0 messages (0 bytes), 0 urgent, 0 flushes",
			"dialer → listener: listener received 2 messages (6 bytes), 0 urgent, discarded 0 messages (0 bytes)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("inspect output lacks %q", want)
			}
		}
		pw.Close()
		send.mustSucceed(t)
		recv.mustSucceed(t)
	})

	t.Run("sender-dies", func(t *testing.T) {
		env := cli.env(t)
		recv := cli.start(t, env, nil, "recv", "-lines", "crash")
		pr, pw := io.Pipe()
		defer pw.Close()
		send := cli.start(t, env, pr, "send", "-lines", "crash")
		io.WriteString(pw, "before the crash\n")
		recv.waitOutput(t, "before the crash\n")
		send.cmd.Process.Kill()
		pw.Close() // ends exec's copying to the dead process's stdin
		send.wait(t)
		err := recv.wait(t)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("recv after the sender's death: %v, want exit status 1", err)
		}
		if !strings.Contains(recv.stderr.String(), "the sender exited without closing") || recv.stdout.String() != "before the crash\n" {
			t.Errorf("recv: stdout %q, stderr %q", recv.stdout.String(), recv.stderr.String())
		}
	})

	t.Run("fallback-notice", func(t *testing.T) {
		// The dialer forces the fallback: recv, which did not ask for it,
		// says so on stderr, with the reason quoted.
		env := cli.env(t)
		recv := cli.start(t, env, nil, "recv", "-lines", "notice")
		send := cli.start(t, env, strings.NewReader("x\n"), "send", "-lines", "-fallback", "notice")
		send.mustSucceed(t)
		recv.mustSucceed(t)
		want := `shmlane: no shared memory, using the unix socket: "forced by the dialer (DialOptions.ForceFallback)"`
		if !strings.Contains(recv.stderr.String(), want) {
			t.Errorf("recv's stderr %q lacks %q", recv.stderr.String(), want)
		}
		if send.stderr.String() != "" {
			t.Errorf("send -fallback wrote to stderr: %q", send.stderr.String())
		}
	})

	t.Run("require-shm", func(t *testing.T) {
		env := cli.env(t)
		recv := cli.start(t, env, nil, "recv", "-fallback", "-timeout", "3s", "strict")
		send := cli.start(t, env, strings.NewReader("x"), "send", "-require-shm", "strict")
		if err := send.wait(t); err == nil || !strings.Contains(send.stderr.String(), "shared memory required and unavailable") ||
			!strings.Contains(send.stderr.String(), "forced by the listener") {
			t.Errorf("send -require-shm to a listener that forces the fallback: %v, stderr %q", err, send.stderr.String())
		}
		recv.wait(t)
		if !strings.Contains(recv.stderr.String(), "requires shared memory") {
			t.Errorf("recv's stderr %q does not report the refused dialer", recv.stderr.String())
		}
	})

	t.Run("errors", func(t *testing.T) {
		env := cli.env(t)
		for _, tc := range []struct {
			args   []string
			status int
			stderr string
		}{
			{[]string{"send", "-timeout", "200ms", "nobody"}, 1, "no listener"},
			{[]string{"inspect", "nobody"}, 1, "no listener"},
			{[]string{"recv", "a/b"}, 2, "name may hold only"},
			{[]string{"send"}, 2, "want exactly one NAME"},
			{[]string{"recv", "-capacity", "3000", "x"}, 2, "-capacity must be a power of two"},
			{[]string{"send", "-capacity", "64k", "-fallback", "-timeout", "100ms", "x"}, 1, "no listener"},
			{[]string{"inspect", "-timeout", "0s", "x"}, 2, "-timeout must be positive"},
			{[]string{"send", "-require-shm", "-fallback", "x"}, 2, "exclude each other"},
			{[]string{"help", "send"}, 0, "-lines"},
		} {
			p := cli.start(t, env, strings.NewReader(""), tc.args...)
			err := p.wait(t)
			status := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tc.status || !strings.Contains(p.stderr.String(), tc.stderr) {
				t.Errorf("shmlane %s: status %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), status, p.stderr.String(), tc.status, tc.stderr)
			}
		}
	})
}

// cliRunner starts the built command.
type cliRunner struct{ bin string }

// env returns an environment whose runtime directory is private to the
// test.
func (r *cliRunner) env(t *testing.T) []string {
	return append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir())
}

type cliProc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan error
	args   []string
}

func (r *cliRunner) start(t *testing.T, env []string, stdin io.Reader, args ...string) *cliProc {
	t.Helper()
	return r.startTo(t, env, stdin, nil, args...)
}

// startTo starts the command with stdout going to out, or to a buffer if
// out is nil.
func (r *cliRunner) startTo(t *testing.T, env []string, stdin io.Reader, out io.Writer, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{cmd: exec.Command(r.bin, args...), stdout: new(syncBuffer), stderr: new(syncBuffer), done: make(chan error, 1), args: args}
	p.cmd.Env, p.cmd.Stdin, p.cmd.Stderr = env, stdin, p.stderr
	p.cmd.Stdout = p.stdout
	if out != nil {
		p.cmd.Stdout = out
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	return p
}

func (p *cliProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(2 * time.Minute):
		t.Fatalf("shmlane %s did not finish in 2 minutes; stderr:\n%s", strings.Join(p.args, " "), p.stderr)
	}
	return nil
}

func (p *cliProc) mustSucceed(t *testing.T) {
	t.Helper()
	if err := p.wait(t); err != nil {
		t.Fatalf("shmlane %s: %v; stderr:\n%s", strings.Join(p.args, " "), err, p.stderr)
	}
}

// waitOutput waits until the process has written want.
func (p *cliProc) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p.stdout.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("shmlane %s wrote %q, want %q; stderr:\n%s", strings.Join(p.args, " "), p.stdout.String(), want, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// randomStream returns a reader of size pseudo-random bytes and a channel
// that gets their sha256 once they were all read.
func randomStream(size int64, seed uint64) (io.Reader, <-chan []byte) {
	pr, pw := io.Pipe()
	sum := make(chan []byte, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, 1))
		h := sha256.New()
		buf := make([]byte, 256<<10)
		for left := size; left > 0; {
			n := min(int64(len(buf)), left)
			for i := 0; i < int(n); i += 8 {
				v := rng.Uint64()
				for j := 0; j < 8 && i+j < int(n); j++ {
					buf[i+j] = byte(v >> (8 * j))
				}
			}
			h.Write(buf[:n])
			if _, err := pw.Write(buf[:n]); err != nil {
				pw.CloseWithError(err)
				sum <- nil
				return
			}
			left -= n
		}
		pw.Close()
		sum <- h.Sum(nil)
	}()
	return pr, sum
}
