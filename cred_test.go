//go:build linux

package shmlane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	helpers["refused"] = helperRefused
}

// nobody is the uid and gid the misconfigured peer runs as.
const nobody = 65534

// TestPeerRefused starts a peer as another user (uid 65534) that reaches
// the listener's socket, as a misconfigured peer would, and checks that
// the side whose allow-list does not admit the other refuses it, and that
// both sides get an error that matches ErrPeerRefused and names the uid.
func TestPeerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: starting a peer with another uid needs root (run the tests as root)")
	}
	exe := copyTestBinary(t)
	// A directory uid 65534 can search, holding a socket it may connect
	// to: the credential check is all that stands in its way.
	dir := publicDir(t)
	for _, tc := range []struct {
		name        string
		listen      ListenOptions
		childAllow  string   // the child's AllowUIDs
		acceptWants []string // in Accept's error
		dialWants   []string // in the child's Dial error
	}{{
		name:        "listener-refuses",
		listen:      ListenOptions{SocketMode: 0o666},
		childAllow:  "0",
		acceptWants: []string{"dialer pid", "uid 65534", "not in the allow-list [0]"},
		dialWants:   []string{"refused this process", "uid 65534"},
	}, {
		name:        "dialer-refuses",
		listen:      ListenOptions{AllowUIDs: []int{nobody}},
		childAllow:  "",
		acceptWants: []string{"does not allow this listener's uid 0"},
		dialWants:   []string{"listener pid", "has uid 0", "not in the allow-list [65534]"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			lo := tc.listen
			lo.RuntimeDir = dir
			l, err := Listen("uid", &lo)
			must(t, err)
			defer l.Close()
			if fi, err := os.Stat(filepath.Join(dir, "uid.sock")); err != nil || fi.Mode().Perm() != 0o666 {
				t.Fatalf("socket mode: %v, %v; want 0666 so that uid %d can connect", fi.Mode(), err, nobody)
			}
			ch := startChild(t, exe, "refused", map[string]string{"DIR": dir, "NAME": "uid", "ALLOW": tc.childAllow},
				&syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = l.Accept(ctx)
			if !errors.Is(err, ErrPeerRefused) {
				t.Fatalf("Accept() = %v, want ErrPeerRefused; helper stderr:\n%s", err, ch.stderr)
			}
			errContains(t, "Accept()", err, tc.acceptWants...)
			dialErr := ch.line(t, 20*time.Second)
			if !strings.HasPrefix(dialErr, "refused: ") {
				t.Fatalf("child's Dial: %s; want an error matching ErrPeerRefused", dialErr)
			}
			for _, want := range tc.dialWants {
				if !strings.Contains(dialErr, want) {
					t.Errorf("child's Dial error %q does not contain %q", dialErr, want)
				}
			}
			if err := ch.wait(t, 20*time.Second); err != nil {
				t.Fatalf("helper: %v; stderr:\n%s", err, ch.stderr)
			}
			t.Logf("listener: %v", err)
			t.Logf("dialer:   %s", strings.TrimPrefix(dialErr, "refused: "))
		})
	}
}

// helperRefused dials with ALLOW as its allow-list and reports the error.
func helperRefused() error {
	var allow []int
	if s := helperVar("ALLOW"); s != "" {
		uid, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		allow = []int{uid}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, helperVar("NAME"), &DialOptions{RuntimeDir: helperVar("DIR"), AllowUIDs: allow})
	if err == nil {
		c.Close()
		return errors.New("Dial() succeeded, want it refused")
	}
	if !errors.Is(err, ErrPeerRefused) {
		fmt.Printf("other: %v\n", err)
		return nil
	}
	fmt.Printf("refused: %v\n", err)
	return nil
}

// copyTestBinary copies the test binary into a directory that any user may
// search, with mode 0755, for a child that runs as another user.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	must(t, err)
	dir := publicDir(t)
	exe := filepath.Join(dir, "shmlane.test")
	src, err := os.Open(self)
	must(t, err)
	defer src.Close()
	dst, err := os.OpenFile(exe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	must(t, err)
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	must(t, dst.Close())
	return exe
}

// publicDir makes a directory in /tmp with mode 0755, removed at the end of
// the test. (t.TempDir's directories are 0700, and so is their parent.)
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "shmlane-test-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	return dir
}
