package tracing_test

import (
	"fmt"
	"log"
	"os/exec"

	"github.com/shmlane/shmlane/tracing"
)

// Count the system calls of a command and its children. The command runs
// for a moment before Watch, so its first calls are not counted; "shmlane
// trace" gates the command to count it from its first instruction.
func ExampleProbe() {
	probe, err := tracing.Start(nil)
	if err != nil {
		log.Fatal(err) // errors.Is(err, tracing.ErrPermission): run as root
	}
	defer probe.Close()

	cmd := exec.Command("sh", "-c", "ls / >/dev/null")
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	if err := probe.WatchTree(cmd.Process.Pid); err != nil {
		log.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		log.Fatal(err)
	}

	counts, err := probe.Snapshot()
	if err != nil {
		log.Fatal(err)
	}
	all := counts.Sum()
	fmt.Println("system calls:", all.Total)
	for _, sc := range all.Sorted() {
		fmt.Printf("%-16s %d\n", tracing.SyscallName(sc.Nr), sc.Count)
	}
}
