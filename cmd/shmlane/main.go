// Command shmlane measures and inspects shmlane transports.
//
// Usage:
//
//	shmlane <command> [flags]
//
// Run "shmlane help" for the list of commands and "shmlane help <command>"
// for a command's flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
)

// subcommands maps each command name to its implementation. A command
// returns nil on success, flag.ErrHelp when it printed its own help, an
// error made by usageErrorf for a command line it cannot run (exit status
// 2), and any other error for a failure (exit status 1). Files of this
// package register their commands here from their init functions.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"bench": runBench,
}

// summaries holds the one-line description of each command for the usage
// text. A command missing here is listed without one.
var summaries = map[string]string{
	"bench": "compare the ring with pipes and channels between processes",
	"trace": "count a process's system calls with an eBPF probe",
}

// startupHooks run first thing in main, before the command line is read.
// A hook that recognises the process as a helper started by this program
// (a benchmark peer, a traced child) does its work and exits; every other
// hook returns at once.
var startupHooks []func()

func main() {
	for _, hook := range startupHooks {
		hook()
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches args to a command and returns the exit status: 0 on
// success or help, 1 on failure, 2 on a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			usage(stderr)
			return 0
		}
		name, rest = rest[0], []string{"-h"}
	}
	cmd, ok := subcommands[name]
	if !ok {
		fmt.Fprintf(stderr, "shmlane: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	err := cmd(rest, stdout, stderr)
	var uerr *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &uerr):
		if !uerr.reported {
			fmt.Fprintf(stderr, "shmlane %s: %v\nRun 'shmlane help %s' for usage.\n", name, err, name)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "shmlane %s: %v\n", name, err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, "shmlane moves messages between processes through shared memory.\n\n")
	fmt.Fprint(w, "Usage:\n\n\tshmlane <command> [flags]\n\nCommands:\n\n")
	names := make([]string, 0, len(subcommands))
	for name := range subcommands {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(w, "\t%-8s %s\n", name, summaries[name])
	}
	fmt.Fprint(w, "\nRun 'shmlane help <command>' for a command's flags.\n")
}

// usageError is a command line that cannot be run: a bad flag value or a
// bad combination of flags. main exits with status 2 for it.
type usageError struct {
	msg      string
	reported bool // the flag package already printed it with the usage
}

func (e *usageError) Error() string { return e.msg }

// usageErrorf returns a usageError with a formatted message.
func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseFlags parses args with fs, which must use flag.ContinueOnError.
// A flag the set does not know, a malformed value or a positional argument
// becomes a usageError; -h gives flag.ErrHelp after fs printed its help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error(), reported: true}
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
