package ring

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// Cross-process tests re-execute the test binary as the peer: the child
// runs TestHelperProcess with SHMLANE_HELPER naming its role and the
// segment's memfd as fd 3.

const helperEnv = "SHMLANE_HELPER"

// startHelper starts the test binary as a helper with the segment at fd 3.
func startHelper(t testing.TB, seg *Segment, role string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := seg.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, "SHMLANE_HELPER_ARGS="+fmt.Sprint(args))
	for i, a := range args {
		cmd.Env = append(cmd.Env, "SHMLANE_ARG"+strconv.Itoa(i)+"="+a)
	}
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func itoa(i int) string { return strconv.Itoa(i) }

func helperArg(i int) string { return os.Getenv("SHMLANE_ARG" + strconv.Itoa(i)) }

func helperInt(i int) int {
	n, err := strconv.Atoi(helperArg(i))
	if err != nil {
		panic(err)
	}
	return n
}

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

func helperSegment() (*Segment, error) {
	f := os.NewFile(3, "segment")
	defer f.Close()
	return Open(f)
}
