package shmlane

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxNameLen is the longest name Listen and Dial accept, in bytes.
const MaxNameLen = 64

// maxSocketPath is the longest path a unix socket address holds
// (sizeof(sun_path) less the terminating NUL).
const maxSocketPath = 107

// CheckName reports whether name is a valid rendezvous name: 1 to
// MaxNameLen bytes of [A-Za-z0-9._-], not starting with a dot and not
// containing "..". The error wraps ErrBadName and says which rule the name
// breaks.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: name is empty", ErrBadName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name must be at most %d bytes: len=%d", ErrBadName, MaxNameLen, len(name))
	case name[0] == '.':
		return fmt.Errorf("%w: name must not start with a dot: %q", ErrBadName, name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%w: name must not contain \"..\": %q", ErrBadName, name)
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == '-' {
			continue
		}
		what := fmt.Sprintf("%q", b)
		if b >= 0x80 {
			what = fmt.Sprintf("byte %#x", b)
		}
		return fmt.Errorf("%w: name may hold only [A-Za-z0-9._-]: %s at offset %d of %q", ErrBadName, what, i, name)
	}
	return nil
}

// RuntimeDir returns the directory where the socket of a name lives when
// no override is given: $XDG_RUNTIME_DIR/shmlane if XDG_RUNTIME_DIR is an
// absolute path, else /run/shmlane for root (euid 0), else
// /tmp/shmlane-UID. An override, if not empty, is returned as it is.
func RuntimeDir(override string) string {
	if override != "" {
		return override
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "shmlane")
	}
	uid := os.Geteuid()
	if uid == 0 {
		return "/run/shmlane"
	}
	return "/tmp/shmlane-" + strconv.Itoa(uid)
}

// paths returns the socket and lock file paths of name in dir.
func paths(name, dir string) (sock, lock string, err error) {
	if err := CheckName(name); err != nil {
		return "", "", err
	}
	dir = RuntimeDir(dir)
	sock = filepath.Join(dir, name+".sock")
	if len(sock) > maxSocketPath {
		return "", "", fmt.Errorf("socket path must be at most %d bytes (choose a shorter runtime directory or name): len=%d path=%s", maxSocketPath, len(sock), sock)
	}
	return sock, filepath.Join(dir, name+".lock"), nil
}
