//go:build linux

package shmlane

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCheckName(t *testing.T) {
	for _, name := range []string{"a", "demo", "A-b_c.d", "x.sock", "0", strings.Repeat("n", MaxNameLen), "a.b.c"} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", name, err)
		}
	}
	for _, tc := range []struct{ name, rule string }{
		{"", "empty"},
		{strings.Repeat("n", MaxNameLen+1), "at most 64 bytes: len=65"},
		{".hidden", "must not start with a dot"},
		{"..", "must not start with a dot"},
		{"a..b", `must not contain ".."`},
		{"a/b", `'/' at offset 1`},
		{"../etc", "must not start with a dot"},
		{"a b", `' ' at offset 1`},
		{"naïve", "byte 0xc3 at offset 2"},
		{"a\x00b", `'\x00' at offset 1`},
	} {
		err := CheckName(tc.name)
		if !errors.Is(err, ErrBadName) {
			t.Errorf("CheckName(%q) = %v, want ErrBadName", tc.name, err)
			continue
		}
		errContains(t, "CheckName("+tc.name+")", err, tc.rule)
	}
	dir := t.TempDir()
	if _, err := Listen("a/b", &ListenOptions{RuntimeDir: dir}); !errors.Is(err, ErrBadName) {
		t.Errorf("Listen(\"a/b\") = %v, want ErrBadName", err)
	}
	if _, err := Dial(context.Background(), "..", &DialOptions{RuntimeDir: dir}); !errors.Is(err, ErrBadName) {
		t.Errorf("Dial(\"..\") = %v, want ErrBadName", err)
	}
	if _, err := Inspect(context.Background(), "", &DialOptions{RuntimeDir: dir}); !errors.Is(err, ErrBadName) {
		t.Errorf("Inspect(\"\") = %v, want ErrBadName", err)
	}
	long := "/tmp/" + strings.Repeat("d", 60)
	_, err := Listen(strings.Repeat("n", 60), &ListenOptions{RuntimeDir: long})
	errContains(t, "Listen() with a socket path over 107 bytes", err, "socket path must be at most 107 bytes")
}

func TestRuntimeDir(t *testing.T) {
	if got := RuntimeDir("/x/y"); got != "/x/y" {
		t.Errorf("RuntimeDir(\"/x/y\") = %q, want the override", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got := RuntimeDir(""); got != "/run/user/1000/shmlane" {
		t.Errorf("RuntimeDir with XDG_RUNTIME_DIR = %q, want /run/user/1000/shmlane", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "relative")
	want := "/run/shmlane"
	if uid := os.Geteuid(); uid != 0 {
		want = "/tmp/shmlane-" + itoa(uid)
	}
	if got := RuntimeDir(""); got != want {
		t.Errorf("RuntimeDir with a relative XDG_RUNTIME_DIR = %q, want %q", got, want)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestListenerFiles(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "rt") // created by Listen
	l, err := Listen("files", &ListenOptions{RuntimeDir: dir})
	must(t, err)
	for path, mode := range map[string]os.FileMode{dir: os.ModeDir | 0o700, dir + "/files.sock": os.ModeSocket | 0o600, dir + "/files.lock": 0o600} {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, %v; want mode %v", path, fi.Mode(), err, mode)
		}
	}
	if l.Name() != "files" || l.Addr().String() != dir+"/files.sock" || l.Addr().Network() != "unixpacket" {
		t.Errorf("Name() = %q, Addr() = %v %q", l.Name(), l.Addr().Network(), l.Addr())
	}
	_, err = Listen("files", &ListenOptions{RuntimeDir: dir})
	if !errors.Is(err, ErrNameInUse) {
		t.Fatalf("a second Listen() = %v, want ErrNameInUse", err)
	}
	errContains(t, "second Listen()", err, "pid "+itoa(os.Getpid()))

	// Close releases a waiting Accept and removes both files.
	done := blocked(t, "Accept", func() error { _, err := l.Accept(context.Background()); return err })
	must(t, l.Close())
	must(t, l.Close())
	if err := waitErr(t, done, "Accept after Close"); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept() interrupted by Close = %v, want ErrClosed", err)
	}
	if _, err := l.Accept(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept() after Close = %v, want ErrClosed", err)
	}
	for _, f := range []string{"files.sock", "files.lock"} {
		if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Close: %v, want it removed", f, err)
		}
	}
	l2, err := Listen("files", &ListenOptions{RuntimeDir: dir})
	must(t, err)
	must(t, l2.Close())
}

func TestListenOptionsChecked(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		opts ListenOptions
		want string
	}{
		{ListenOptions{Capacity: 3000}, "capacity must be 0 or a power of two in [4096, 1073741824]: capacity=3000"},
		{ListenOptions{Capacity: 1 << 31}, "capacity=2147483648"},
		{ListenOptions{AllowUIDs: []int{-1}}, "allowed uid must be in"},
		{ListenOptions{HandshakeTimeout: -time.Second}, "handshake timeout must not be negative"},
	} {
		tc.opts.RuntimeDir = dir
		_, err := Listen("opts", &tc.opts)
		errContains(t, "Listen()", err, tc.want)
	}
	_, err := Dial(context.Background(), "opts", &DialOptions{RuntimeDir: dir, Capacity: 5000})
	errContains(t, "Dial()", err, "capacity=5000")

	// A runtime directory that others may write to, or that is a
	// symbolic link, is refused.
	open := filepath.Join(dir, "open")
	must(t, os.Mkdir(open, 0o777))
	must(t, os.Chmod(open, 0o777))
	_, err = Listen("x", &ListenOptions{RuntimeDir: open})
	errContains(t, "Listen() in a world-writable directory", err, "not writable by group or others", "mode -rwxrwxrwx")
	link := filepath.Join(dir, "link")
	must(t, os.Symlink(t.TempDir(), link))
	_, err = Listen("x", &ListenOptions{RuntimeDir: link})
	errContains(t, "Listen() in a symbolic link", err, "must be a directory")
	// A file where the socket goes is left alone.
	must(t, os.WriteFile(filepath.Join(dir, "busy.sock"), []byte("data"), 0o600))
	_, err = Listen("busy", &ListenOptions{RuntimeDir: dir})
	errContains(t, "Listen() over a regular file", err, "is not a socket", "not removing it")
}

func TestDialNoListener(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "absent", &DialOptions{RuntimeDir: dir}); !errors.Is(err, ErrNoListener) {
		t.Fatalf("Dial() with no listener = %v, want ErrNoListener", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	_, err := Dial(short, "absent", &DialOptions{RuntimeDir: dir, WaitForListener: true})
	if !errors.Is(err, ErrNoListener) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial() waiting past its context = %v, want ErrNoListener and context.DeadlineExceeded", err)
	}

	// WaitForListener: the listener comes up after Dial started.
	dialed := make(chan error, 1)
	var c *Conn
	go func() {
		var err error
		c, err = Dial(ctx, "late", &DialOptions{RuntimeDir: dir, WaitForListener: true})
		dialed <- err
	}()
	time.Sleep(150 * time.Millisecond)
	l, err := Listen("late", &ListenOptions{RuntimeDir: dir})
	must(t, err)
	defer l.Close()
	s, err := l.Accept(ctx)
	must(t, err)
	defer s.Close()
	must(t, <-dialed)
	defer c.Close()
	must(t, s.Send([]byte("late")))
	buf := make([]byte, 8)
	if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "late" {
		t.Fatalf("Recv() = %q, %v", buf[:n], err)
	}
}

func TestAcceptContext(t *testing.T) {
	l, err := Listen("ctx", &ListenOptions{RuntimeDir: t.TempDir()})
	must(t, err)
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := blocked(t, "Accept", func() error { _, err := l.Accept(ctx); return err })
	cancel()
	if err := waitErr(t, done, "Accept after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Accept() after cancel = %v, want context.Canceled", err)
	}
}

// TestFallbackReasons checks who decides a fallback and that both ends
// report why.
func TestFallbackReasons(t *testing.T) {
	for _, m := range []mode{
		{name: "dialer", dial: DialOptions{ForceFallback: true}, transport: "unix", reason: "forced by the dialer (DialOptions.ForceFallback)"},
		{name: "listener", listen: ListenOptions{ForceFallback: true}, transport: "unix", reason: "forced by the listener (ListenOptions.ForceFallback)"},
		{name: "none", transport: "ring"},
	} {
		t.Run(m.name, func(t *testing.T) {
			server, client := newPair(t, m)
			if server.FallbackReason() != m.reason || client.FallbackReason() != m.reason {
				t.Errorf("FallbackReason(): listener %q, dialer %q, want %q", server.FallbackReason(), client.FallbackReason(), m.reason)
			}
		})
	}
}

func TestCapacityNegotiation(t *testing.T) {
	for _, tc := range []struct{ listen, dial, want int }{
		{0, 0, 1 << 20},
		{8 << 10, 0, 8 << 10},
		{0, 32 << 10, 32 << 10},
		{64 << 10, 16 << 10, 64 << 10},
	} {
		server, client := newPair(t, mode{listen: ListenOptions{Capacity: tc.listen}, dial: DialOptions{Capacity: tc.dial}, transport: "ring"})
		for _, c := range []*Conn{server, client} {
			st := c.Stats()
			if st.Send.Capacity != uint64(tc.want) || st.Recv.Capacity != uint64(tc.want) {
				t.Errorf("listener %d, dialer %d: capacities %d and %d, want %d", tc.listen, tc.dial, st.Send.Capacity, st.Recv.Capacity, tc.want)
			}
		}
	}
}
