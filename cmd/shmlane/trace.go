package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/tracing"
)

// traceExecEnv is set, to the resolved path of the command, in the
// environment of the helper that runTrace starts: /proc/self/exe again, which
// says it is ready by closing fd 4, waits for a go-ahead byte on fd 3 and
// then execs the command in its own process. runTrace watches the helper
// with tracing.WatchOptions.AfterExec, so counting starts when the pid
// becomes the command, at its first instruction: neither the helper's
// system calls nor the execve itself are counted, and none of the
// command's is missed.
const traceExecEnv = "SHMLANE_TRACE_EXEC"

// The helper's ends of its two pipes (ExtraFiles[0] and [1]).
const (
	traceGateFD  = 3 // the go-ahead, read by the helper
	traceReadyFD = 4 // closed by the helper once it waits for the go-ahead
)

func init() {
	subcommands["trace"] = runTrace
	startupHooks = append(startupHooks, maybeRunTraceExecHelper)
}

// maybeRunTraceExecHelper runs traceExecHelper, and does not return, if
// this process is the helper started by runTrace; otherwise it returns at
// once. It is one of main's startupHooks.
func maybeRunTraceExecHelper() {
	if _, ok := os.LookupEnv(traceExecEnv); ok {
		traceExecHelper()
	}
}

// traceExecHelper waits until runTrace has started watching this process,
// then replaces it with the command: the path in traceExecEnv, with this
// process's arguments (argv[0] included) and environment, less
// traceExecEnv. If runTrace closes the gate without the go-ahead, it exits
// without running the command.
func traceExecHelper() {
	path := os.Getenv(traceExecEnv)
	os.Unsetenv(traceExecEnv)
	syscall.CloseOnExec(traceGateFD)

	// Ready: this process is past its own execve, so the next one, of the
	// command, is the one that starts the count.
	syscall.Close(traceReadyFD)
	var b [1]byte
	for {
		n, err := syscall.Read(traceGateFD, b[:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "shmlane trace: wait for go-ahead on fd %d: %v\n", traceGateFD, err)
		}
		if n != 1 {
			// Without an error, runTrace gave up and has said why.
			os.Exit(125)
		}
		break
	}

	err := syscall.Exec(path, os.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "shmlane trace: exec %s: %v\n", path, err)
	if errors.Is(err, syscall.ENOENT) {
		os.Exit(127)
	}
	os.Exit(126)
}

// traceReport is the -json output of shmlane trace.
type traceReport struct {
	Command   []string       `json:"command"`
	Seconds   float64        `json:"seconds"`
	Total     uint64         `json:"total"`
	PerSecond float64        `json:"per_second"`
	Processes int            `json:"processes"`
	Syscalls  []traceSyscall `json:"syscalls"`
}

type traceSyscall struct {
	Name      string  `json:"name"`
	Nr        int     `json:"nr"`
	Count     uint64  `json:"count"`
	PerSecond float64 `json:"per_second"`
}

const traceUsage = `usage: shmlane trace [-json] [-children=true] [-o file] -- command [arg...]

Runs command and counts the system calls it makes, with an eBPF probe, from
its first instruction to its exit. Prints each system call with its count
and rate, highest first, then the total and the elapsed time. Needs root, or
CAP_BPF and CAP_PERFMON.

`

// runTrace implements "shmlane trace". It returns the command's failure
// (an error wrapping *exec.ExitError, whose ExitCode the caller can use) after
// printing the report.
func runTrace(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print the report as a JSON object")
	children := fs.Bool("children", true, "count the command's children too, and theirs")
	outPath := fs.String("o", "", "write the report to `file` instead of standard output")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), traceUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error(), reported: true}
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageErrorf("no command given")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}

	report, reportFile := stdout, (*os.File)(nil)
	if *outPath != "" {
		if reportFile, err = os.Create(*outPath); err != nil {
			return err
		}
		defer reportFile.Close()
		report = reportFile
	}

	probe, err := tracing.Start(nil)
	if err != nil {
		return err
	}
	defer probe.Close()

	gateR, gateW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer gateW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		gateR.Close()
		return err
	}
	defer readyR.Close()
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       argv,
		Env:        append(os.Environ(), traceExecEnv+"="+path),
		Stdin:      os.Stdin,
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{gateR, readyW},
	}
	err = cmd.Start()
	gateR.Close()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	// abort stops the helper before it runs the command.
	abort := func(err error) error {
		gateW.Close()
		cmd.Wait()
		return err
	}

	// EOF once the helper runs and waits for the go-ahead (or has died).
	if _, err := readyR.Read(make([]byte, 1)); err != io.EOF {
		return abort(fmt.Errorf("start %s: helper did not get ready: %v", argv[0], err))
	}
	opts := &tracing.WatchOptions{Children: *children, AfterExec: true}
	if err := probe.WatchWith(cmd.Process.Pid, opts); err != nil {
		hint := ""
		if *children && errors.Is(err, tracing.ErrNotSupported) {
			hint = " (run with -children=false to count the command alone)"
		}
		return abort(fmt.Errorf("%w%s", err, hint))
	}

	// SIGINT and SIGQUIT from the terminal reach the whole foreground
	// process group, the command included: outlive them to print the
	// report. SIGTERM and SIGHUP sent to shmlane alone are passed on.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	waited := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGTERM || s == syscall.SIGHUP {
					cmd.Process.Signal(s)
				}
			case <-waited:
				return
			}
		}
	}()

	start := time.Now()
	if _, err := gateW.Write([]byte{1}); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		close(waited)
		return fmt.Errorf("release %s: %w", argv[0], err)
	}
	gateW.Close()
	waitErr := cmd.Wait()
	elapsed := time.Since(start)
	close(waited)

	counts, err := probe.Snapshot()
	if err != nil {
		return err
	}
	if counts.Dropped != 0 || counts.LostChildren != 0 {
		fmt.Fprintf(stderr, "shmlane trace: tables full: %d system calls and %d child processes not counted\n",
			counts.Dropped, counts.LostChildren)
	}
	r := newTraceReport(argv, elapsed, counts)
	if *jsonOut {
		err = writeTraceJSON(report, r)
	} else {
		err = writeTraceTable(report, r)
	}
	if err == nil && reportFile != nil {
		err = reportFile.Close()
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if waitErr != nil {
		return fmt.Errorf("%s: %w", argv[0], waitErr)
	}
	return nil
}

func newTraceReport(argv []string, elapsed time.Duration, c tracing.Counts) traceReport {
	secs := elapsed.Seconds()
	rate := func(n uint64) float64 {
		if secs <= 0 {
			return 0
		}
		return float64(n) / secs
	}
	sum := c.Sum()
	r := traceReport{
		Command:   argv,
		Seconds:   secs,
		Total:     sum.Total,
		PerSecond: rate(sum.Total),
		Processes: len(c.ByPID),
		Syscalls:  []traceSyscall{},
	}
	for _, sc := range sum.Sorted() {
		r.Syscalls = append(r.Syscalls, traceSyscall{
			Name:      tracing.SyscallName(sc.Nr),
			Nr:        sc.Nr,
			Count:     sc.Count,
			PerSecond: rate(sc.Count),
		})
	}
	return r
}

func writeTraceJSON(w io.Writer, r traceReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func writeTraceTable(w io.Writer, r traceReport) error {
	nameW, countW := len("syscall"), len("count")
	for _, s := range r.Syscalls {
		nameW = max(nameW, len(s.Name))
		countW = max(countW, len(fmt.Sprint(s.Count)))
	}
	countW = max(countW, len(fmt.Sprint(r.Total)))
	const rateW = 14
	row := func(name string, count any, rate any) string {
		return fmt.Sprintf("%-*s  %*v  %*v\n", nameW, name, countW, count, rateW, rate)
	}
	var b []byte
	b = append(b, row("syscall", "count", "per second")...)
	for _, s := range r.Syscalls {
		b = append(b, row(s.Name, s.Count, fmt.Sprintf("%.1f", s.PerSecond))...)
	}
	b = append(b, row("total", r.Total, fmt.Sprintf("%.1f", r.PerSecond))...)
	plural := "es"
	if r.Processes == 1 {
		plural = ""
	}
	b = fmt.Appendf(b, "elapsed %.6f s, %d process%s\n", r.Seconds, r.Processes, plural)
	_, err := w.Write(b)
	return err
}
