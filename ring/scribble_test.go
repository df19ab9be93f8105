//go:build linux

package ring

// The scribbler suite. A segment is shared with a process that may be buggy
// or hostile, and the library promises that a side never faults or panics,
// never returns later than its deadline, and returns only messages of at
// most MaxMessage bytes or one of its documented errors, whatever the peer
// writes into shared memory.
//
// Each round makes a fresh segment and starts, as children (the helper
// pattern of proc_test.go), one or two victims that attach in the role
// under test and a peer that attaches in the other role and sends or
// receives normally, so that the victims' calls go through their full
// paths (wraps, padding, waits, wakes) and not only the error paths. Both
// run random operations, each with a short deadline (SetDeadline, a
// context, or both), and check every result. Meanwhile this process, the
// scribbler, writes words into the mapping: every index and position, the
// record headers at them, the futex, waiting, closed and pid words, the
// out-of-band lane, the MPMC pid tables, and random words anywhere after
// the header page. A victim that breaks a promise says so on stderr and
// exits with status 1; a call that does not return is reported by the
// victim's watchdog, with the stuck goroutine's stack; a fault kills the
// victim and the runtime says so on stderr. The test fails on any of
// these, or if a victim outlives its duration by more than a few seconds.
//
// Half the rounds scribble everything, each word for good; the other half
// ("records") only record headers and the words around waits, and most of
// their writes flicker: the scribbler puts the old value back a few
// milliseconds later unless someone wrote the word since, so that the ring
// heals and its traffic goes on between hostile words.
//
// A corrupt endpoint stays corrupt (ErrCorrupt is sticky: the victim checks
// that the next call fails too), so a victim then closes it and attaches
// again, as a restarted process would after a supervisor cleared its side's
// pid and closed words; it also restarts now and then without cause, so
// that attaching meets the scribbled words too. The peer restarts the same
// way but does not close first (an SPSC peer plays a process that died and
// came back; an MPMC peer attaches anew before it closes), so that the
// victims do not see their peer leave at every restart.
//
// SHMLANE_SCRIBBLE_SEED replays a run's choices (the scribbler's and the
// children's; timing still differs), SHMLANE_SCRIBBLE_ROUNDS runs more
// rounds per role.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/shmlane/shmlane/internal/layout"
)

const scribbleRole = "scribble-victim"

// Arguments of the scribble-victim helper, in order.
const (
	scribbleArgKind     = iota // spsc-producer, ..., or selftest-*
	scribbleArgDuration        // milliseconds of operations
	scribbleArgSeed
	scribbleArgStrict // "1": a broken promise ends the process with status 1
	scribbleArgWait   // "spin" or "sleep": the endpoints' SpinTime
	scribbleArgSlack  // milliseconds a call may run past its deadline
)

// scribbleFaults are what the Go runtime prints when a process faults or
// panics; none may appear on a victim's stderr.
var scribbleFaults = []string{"panic", "fatal error", "unexpected fault", "SIGSEGV", "SIGBUS"}

// scribbleDeadlines are the deadlines of the victims' calls; 0 makes a call
// a non-blocking try.
var scribbleDeadlines = []time.Duration{0, 100 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}

// scribbleAllowed are the errors any call may return with a hostile peer.
var scribbleAllowed = []error{ErrCorrupt, os.ErrDeadlineExceeded, context.DeadlineExceeded, io.EOF, ErrPeerGone, ErrPeerClosed}

func init() {
	helpers[scribbleRole] = func() error {
		f := os.NewFile(3, "segment")
		defer f.Close()
		kind := helperArg(scribbleArgKind)
		open := Open
		if strings.HasPrefix(kind, "mpmc-") {
			open = OpenMPMC
		}
		seg, err := open(f)
		if err != nil {
			return err
		}
		seed, err := strconv.ParseUint(helperArg(scribbleArgSeed), 10, 64)
		if err != nil {
			return err
		}
		v := &scribbleVictim{
			kind:   kind,
			strict: helperArg(scribbleArgStrict) == "1",
			seed:   seed,
			rng:    rand.New(rand.NewPCG(seed, 0x5c1b)),
			seg:    seg,
			sleep:  helperArg(scribbleArgWait) == "sleep",
			slack:  time.Duration(helperInt(scribbleArgSlack)) * time.Millisecond,
			end:    time.Now().Add(time.Duration(helperInt(scribbleArgDuration)) * time.Millisecond),
			counts: map[string]int{},
		}
		return v.run()
	}
}

// scribbleEndpoint is what the four endpoint types have in common.
type scribbleEndpoint interface {
	SetDeadline(time.Time) error
	Close() error
}

// scribbleCall is the call a victim is in, for its watchdog.
type scribbleCall struct {
	n     int
	desc  string
	start time.Time
	limit time.Duration
}

// scribbleVictim runs one role's operations against a segment being
// scribbled on, and checks every call.
type scribbleVictim struct {
	kind   string
	strict bool // a broken promise exits 1; otherwise (the peer) it is only reported
	seed   uint64
	rng    *rand.Rand
	seg    *Segment
	sleep  bool
	slack  time.Duration
	end    time.Time

	maxData   int
	maxUrgent int // 0 without a lane
	payload   []byte
	buf       []byte

	ep         scribbleEndpoint
	lifeEnd    time.Time
	lastUrgent bool // the last call was SendUrgent (whose ErrCorrupt is the lane's)
	calls      int
	bad        string // a broken promise found inside the call in progress
	sink       byte
	inflight   atomic.Pointer[scribbleCall]
	counts     map[string]int
}

func (v *scribbleVictim) who() string {
	if v.strict {
		return fmt.Sprintf("scribble victim %s (pid %d, seed %d)", v.kind, os.Getpid(), v.seed)
	}
	return fmt.Sprintf("scribble peer %s (pid %d, seed %d)", v.kind, os.Getpid(), v.seed)
}

func (v *scribbleVictim) run() error {
	v.maxData = v.seg.MaxMessage()
	if oc := v.seg.OOBCapacity(); oc != 0 {
		v.maxUrgent = layout.MaxMessage(uint64(oc))
	}
	v.payload = make([]byte, max(v.maxData, v.maxUrgent))
	for i := range v.payload {
		v.payload[i] = byte(i*7 + 1)
	}
	v.buf = make([]byte, max(v.maxData, v.maxUrgent))
	go v.watchdog()
	if strings.HasPrefix(v.kind, "selftest-") {
		return v.selftest()
	}
	// The first attach happens before the scribbler starts: it must work.
	if !v.attach(false) {
		return fmt.Errorf("%s: could not attach to a fresh segment", v.who())
	}
	os.Stdout.WriteString("ready\n")
	for time.Now().Before(v.end) {
		if v.ep == nil || time.Now().After(v.lifeEnd) {
			v.restart("end of life")
			continue
		}
		if !v.strict && v.rng.IntN(64) == 0 {
			// The peer pauses now and then: the victim's waits go to
			// sleep, and the victim meets an empty (or full) ring.
			time.Sleep(time.Duration(v.rng.IntN(2000)) * time.Microsecond)
		}
		if err := v.step(); errors.Is(err, ErrCorrupt) {
			v.probe(err)
			v.restart("ErrCorrupt")
		}
	}
	v.finish()
	keys := make([]string, 0, len(v.counts))
	for k := range v.counts {
		keys = append(keys, k)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "summary %s: %d calls", v.kind, v.calls)
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&sb, " %s=%d", k, v.counts[k])
	}
	sb.WriteString("\n")
	os.Stdout.WriteString(sb.String())
	return nil
}

// watchdog reports a call that has run past its limit, with the stacks of
// the goroutines in the library, and ends the process: the call may never
// return.
func (v *scribbleVictim) watchdog() {
	for {
		time.Sleep(20 * time.Millisecond)
		c := v.inflight.Load()
		if c == nil {
			continue
		}
		took := time.Since(c.start)
		if took <= c.limit {
			continue
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var stacks []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "shmlane/ring.") && !strings.Contains(g, "watchdog") {
				stacks = append(stacks, g)
			}
		}
		fmt.Fprintf(os.Stderr, "%s: call #%d %s has not returned after %v (limit %v) [t=%d]\n%s\n",
			v.who(), c.n, c.desc, took.Round(time.Millisecond), c.limit, c.start.UnixNano(), strings.Join(stacks, "\n\n"))
		os.Exit(1)
	}
}

// violation reports a broken promise; a strict victim exits.
func (v *scribbleVictim) violation(n int, desc string, err error, start time.Time, took time.Duration, problem string) {
	fmt.Fprintf(os.Stderr, "%s: call #%d %s = %v after %v: %s [t=%d]\n",
		v.who(), n, desc, err, took.Round(time.Microsecond), problem, start.UnixNano())
	if v.strict {
		os.Exit(1)
	}
}

// allowed reports whether err is nil, one of scribbleAllowed, or one of
// extra.
func scribbleErrAllowed(err error, extra ...error) bool {
	if err == nil {
		return true
	}
	for _, e := range scribbleAllowed {
		if errors.Is(err, e) {
			return true
		}
	}
	for _, e := range extra {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func scribbleErrClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrCorrupt):
		return "corrupt"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, ErrPeerGone):
		return "peergone"
	case errors.Is(err, ErrPeerClosed):
		return "peerclosed"
	case errors.Is(err, ErrLaneFull):
		return "lanefull"
	case errors.Is(err, ErrRoleTaken):
		return "roletaken"
	case errors.Is(err, ErrTooManyPeers):
		return "toomanypeers"
	case errors.Is(err, ErrClosed):
		return "closed"
	}
	return "other"
}

// do runs one call under the watchdog and checks it: it returns within
// limit, it broke no promise checked inside fn (v.bad), and its error is
// allowed.
func (v *scribbleVictim) do(desc string, limit time.Duration, extra []error, fn func() error) error {
	return v.doAs("", desc, limit, extra, fn)
}

// doAs is do for a call counted apart from the operations in the summary
// (category "attach", "close", "probe").
func (v *scribbleVictim) doAs(category, desc string, limit time.Duration, extra []error, fn func() error) error {
	v.calls++
	c := &scribbleCall{n: v.calls, desc: desc, start: time.Now(), limit: limit}
	v.bad = ""
	v.inflight.Store(c)
	err := fn()
	took := time.Since(c.start)
	v.inflight.Store(nil)
	switch {
	case took > limit:
		v.violation(c.n, desc, err, c.start, took, fmt.Sprintf("returned %v late (limit %v)", (took-limit).Round(time.Microsecond), limit))
	case v.bad != "":
		v.violation(c.n, desc, err, c.start, took, v.bad)
	case !scribbleErrAllowed(err, extra...):
		v.violation(c.n, desc, err, c.start, took, "unexpected error")
	}
	if category != "" {
		category += "-"
	}
	v.counts[category+scribbleErrClass(err)]++
	return err
}

// checkLen records a message longer than max as a broken promise.
func (v *scribbleVictim) checkLen(what string, n, max int) {
	if (n < 0 || n > max) && v.bad == "" {
		v.bad = fmt.Sprintf("%s is %d bytes, MaxMessage is %d", what, n, max)
	}
}

// checkShort turns a short-buffer error (the buffer is MaxMessage bytes)
// into a broken promise that says why.
func (v *scribbleVictim) checkShort(err error, n int) {
	if errors.Is(err, io.ErrShortBuffer) && v.bad == "" {
		v.bad = fmt.Sprintf("a %d-byte message does not fit a %d-byte buffer (MaxMessage %d)", n, len(v.buf), v.maxData)
	}
}

// touch reads a message's every byte, so that a slice outside the mapping
// faults here rather than going unnoticed.
func (v *scribbleVictim) touch(m []byte) {
	for _, b := range m {
		v.sink += b
	}
}

// size draws a message size in [0, max], favouring small ones.
func (v *scribbleVictim) size(max int) int {
	switch k := v.rng.IntN(20); {
	case k < 12:
		return v.rng.IntN(min(max, 64) + 1)
	case k < 17:
		return v.rng.IntN(min(max, 1024) + 1)
	case k < 19:
		return v.rng.IntN(max + 1)
	default:
		return max
	}
}

func (v *scribbleVictim) msgs(max int) [][]byte {
	ms := make([][]byte, 1+v.rng.IntN(8))
	for i := range ms {
		ms[i] = v.payload[:v.size(max)]
	}
	return ms
}

func scribbleSizes(ms [][]byte) []int {
	s := make([]int, len(ms))
	for i, m := range ms {
		s[i] = len(m)
	}
	return s
}

// scribbleDeadline is how one call is bounded.
type scribbleDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
	plain  bool // call the method without a context
	how    string
	limit  time.Duration
}

func (d scribbleDeadline) desc(call string, args ...any) string {
	return fmt.Sprintf("%s%v with %s", call, args, d.how)
}

// arm sets the deadline of the next call: SetDeadline, a context with a
// timeout, or both.
func (v *scribbleVictim) arm() (scribbleDeadline, bool) {
	d := scribbleDeadlines[v.rng.IntN(len(scribbleDeadlines))]
	dl := scribbleDeadline{ctx: context.Background(), cancel: func() {}}
	var err error
	switch v.rng.IntN(3) {
	case 0:
		err = v.ep.SetDeadline(time.Now().Add(d))
		dl.plain = v.rng.IntN(2) == 0
		dl.how = fmt.Sprintf("SetDeadline(now+%v)", d)
	case 1:
		err = v.ep.SetDeadline(time.Time{})
		dl.ctx, dl.cancel = context.WithTimeout(context.Background(), d)
		dl.how = fmt.Sprintf("context.WithTimeout(%v)", d)
	default:
		d2 := scribbleDeadlines[v.rng.IntN(len(scribbleDeadlines))]
		err = v.ep.SetDeadline(time.Now().Add(d))
		dl.ctx, dl.cancel = context.WithTimeout(context.Background(), d2)
		dl.how = fmt.Sprintf("SetDeadline(now+%v) and context.WithTimeout(%v)", d, d2)
		d = min(d, d2)
	}
	dl.limit = d + v.slack
	if err != nil {
		v.violation(v.calls, "SetDeadline on an open endpoint", err, time.Now(), 0, "unexpected error")
		dl.cancel()
		return dl, false
	}
	return dl, true
}

func (v *scribbleVictim) options() *Options {
	if v.sleep {
		return &Options{SpinTime: -1}
	}
	if v.rng.IntN(2) == 0 {
		return &Options{SpinTime: 5 * time.Microsecond}
	}
	return nil
}

// attach attaches in v's role. A restart first clears the side's pid and
// closed words, as a supervisor restarting a dead peer would: the old
// endpoint left them set.
func (v *scribbleVictim) attach(restart bool) bool {
	o := v.options()
	var ep scribbleEndpoint
	var ctl int
	switch v.kind {
	case "spsc-producer":
		ctl = layout.SlotOffset(layout.SlotProducerCtl)
	case "spsc-consumer":
		ctl = layout.SlotOffset(layout.SlotConsumerCtl)
	}
	if restart && ctl != 0 {
		v.seg.u32(ctl + layout.CtlPID).Store(0)
		v.seg.u32(ctl + layout.CtlClosed).Store(0)
	}
	err := v.doAs("attach", "attach as "+v.kind, v.slack, []error{ErrRoleTaken, ErrTooManyPeers}, func() error {
		switch v.kind {
		case "spsc-producer":
			p, err := v.seg.Producer(o)
			if err != nil {
				return err
			}
			ep = p
		case "spsc-consumer":
			c, err := v.seg.Consumer(o)
			if err != nil {
				return err
			}
			ep = c
		case "mpmc-producer":
			p, err := v.seg.MPMCProducer(o)
			if err != nil {
				return err
			}
			ep = p
		case "mpmc-consumer":
			c, err := v.seg.MPMCConsumer(o)
			if err != nil {
				return err
			}
			ep = c
		default:
			return fmt.Errorf("unknown victim kind %q", v.kind)
		}
		return nil
	})
	if err != nil {
		return false
	}
	v.ep = ep
	v.lifeEnd = time.Now().Add(time.Duration(50+v.rng.IntN(350)) * time.Millisecond)
	// Sometimes watch the pid the peer wrote (a scribbled one, perhaps):
	// that adds ErrPeerGone to what the calls may see.
	if v.rng.IntN(4) == 0 {
		switch e := ep.(type) {
		case *Producer:
			e.WatchPeer(0)
		case *Consumer:
			e.WatchPeer(0)
		}
	}
	return true
}

// restart closes the endpoint and attaches again, until it works or the
// run ends.
func (v *scribbleVictim) restart(why string) {
	old := v.ep
	v.ep = nil
	closeOld := func() {
		if old != nil {
			v.doAs("close", "Close() at "+why, v.slack+scribbleDeadlines[len(scribbleDeadlines)-1], nil, old.Close)
			old = nil
		}
	}
	switch {
	case v.strict:
		closeOld()
	case strings.HasPrefix(v.kind, "spsc-"):
		// The peer plays a process that died without closing and was
		// restarted: its closed flag never tells the victim that it
		// left, so the victim's traffic goes on.
		old = nil
	}
	// An MPMC peer closes its old endpoint once the new one is attached,
	// so that its side never looks empty to the victims.
	defer closeOld()
	for time.Now().Before(v.end) {
		// Leave the CPU to the peer and the scribbler now and then: a
		// segment scribbled beyond repair makes every attach fail, or
		// every first call after it.
		time.Sleep(time.Duration(v.rng.IntN(2)) * time.Millisecond)
		if v.attach(true) {
			return
		}
	}
}

// probe checks that ErrCorrupt is sticky: the next call, a non-blocking
// try, fails too.
func (v *scribbleVictim) probe(first error) {
	if err := v.ep.SetDeadline(time.Now()); err != nil {
		v.violation(v.calls, "SetDeadline after ErrCorrupt", err, time.Now(), 0, "unexpected error")
		return
	}
	var err error
	var desc string
	urgent := v.lastUrgent
	v.doAs("probe", "probe after ErrCorrupt", v.slack, []error{ErrLaneFull}, func() error {
		switch e := v.ep.(type) {
		case *Producer:
			if urgent {
				desc, err = "SendUrgent([])", e.SendUrgent(nil)
			} else {
				desc, err = "Send([])", e.Send(nil)
			}
		case *Consumer:
			desc = "Recv(buf)"
			_, err = e.Recv(v.buf)
		case *MPMCProducer:
			desc, err = "Send([])", e.Send(nil)
		case *MPMCConsumer:
			desc = "Recv(buf)"
			_, err = e.Recv(v.buf)
		}
		return err
	})
	// The lane's corruption is the lane's: SendUrgent may report the
	// consumer's closed flag first, but it must fail.
	if err == nil || !urgent && !errors.Is(err, ErrCorrupt) {
		v.violation(v.calls, desc+" after a call returned "+first.Error(), err, time.Now(), 0, "ErrCorrupt is not sticky")
	}
}

// step runs one random operation of v's role.
func (v *scribbleVictim) step() error {
	dl, ok := v.arm()
	if !ok {
		return nil
	}
	defer dl.cancel()
	v.lastUrgent = false
	switch e := v.ep.(type) {
	case *Producer:
		return v.stepProducer(e, dl)
	case *Consumer:
		return v.stepConsumer(e, dl)
	case *MPMCProducer:
		return v.stepMPMCProducer(e, dl)
	case *MPMCConsumer:
		return v.stepMPMCConsumer(e, dl)
	}
	return nil
}

func (v *scribbleVictim) stepProducer(p *Producer, dl scribbleDeadline) error {
	k := v.rng.IntN(100)
	if v.maxUrgent == 0 || !v.strict && k >= 80 && v.rng.IntN(8) != 0 {
		// No lane; or the peer, whose urgent messages and flushes are
		// rare so that the victim's waits last.
		k = k * 80 / 100
	}
	switch {
	case k < 30:
		return v.stepSend(p, dl, sendOne)
	case k < 50:
		return v.stepSend(p, dl, sendBatch)
	case k < 80:
		return v.stepSend(p, dl, sendReserve)
	case k < 90:
		m := v.payload[:v.size(v.maxUrgent)]
		v.lastUrgent = true
		return v.do(dl.desc("SendUrgent", len(m)), dl.limit, []error{ErrLaneFull}, func() error { return p.SendUrgent(m) })
	default:
		return v.do(dl.desc("Flush"), dl.limit, nil, p.Flush)
	}
}

// scribbleSender is what Producer and MPMCProducer have in common.
type scribbleSender interface {
	Send([]byte) error
	SendContext(context.Context, []byte) error
	SendBatch([][]byte) (int, error)
	SendBatchContext(context.Context, [][]byte) (int, error)
	Reserve(int) ([]byte, error)
	ReserveContext(context.Context, int) ([]byte, error)
	Commit() error
	Abort() error
}

// The data operations of both producers.
const (
	sendOne     = iota // Send
	sendBatch          // SendBatch
	sendReserve        // Reserve, then Commit or Abort
)

// stepSend runs one data operation on a producer of either kind.
func (v *scribbleVictim) stepSend(p scribbleSender, dl scribbleDeadline, op int) error {
	switch op {
	case sendOne:
		m := v.payload[:v.size(v.maxData)]
		return v.do(dl.desc("Send", len(m)), dl.limit, nil, func() error {
			if dl.plain {
				return p.Send(m)
			}
			return p.SendContext(dl.ctx, m)
		})
	case sendBatch:
		ms := v.msgs(v.maxData)
		return v.do(dl.desc("SendBatch", scribbleSizes(ms)), dl.limit, nil, func() error {
			var n int
			var err error
			if dl.plain {
				n, err = p.SendBatch(ms)
			} else {
				n, err = p.SendBatchContext(dl.ctx, ms)
			}
			v.checkCount("SendBatch", n, len(ms), err)
			return err
		})
	default:
		n := v.size(v.maxData)
		desc := dl.desc("Reserve", n)
		var b []byte
		err := v.do(desc, dl.limit, nil, func() (err error) {
			if dl.plain {
				b, err = p.Reserve(n)
			} else {
				b, err = p.ReserveContext(dl.ctx, n)
			}
			if err == nil && len(b) != n {
				v.bad = fmt.Sprintf("Reserve(%d) returned %d bytes", n, len(b))
			}
			return err
		})
		if err != nil {
			return err
		}
		copy(b, v.payload)
		if v.rng.IntN(4) == 0 {
			return v.do("Abort() after "+desc, dl.limit, nil, p.Abort)
		}
		return v.do("Commit() after "+desc, dl.limit, nil, p.Commit)
	}
}

// checkCount checks a batch's count: within [0, want], and want when the
// batch succeeded.
func (v *scribbleVictim) checkCount(call string, n, want int, err error) {
	if (n < 0 || n > want || err == nil && n != want) && v.bad == "" {
		v.bad = fmt.Sprintf("%s of %d messages returned %d, %v", call, want, n, err)
	}
}

// urgentMax is the bound for a message that may be urgent or not.
func (v *scribbleVictim) urgentMax(urgent bool) int {
	if urgent {
		return v.maxUrgent
	}
	return v.maxData
}

func (v *scribbleVictim) stepConsumer(c *Consumer, dl scribbleDeadline) error {
	anyMax := max(v.maxData, v.maxUrgent)
	switch k := v.rng.IntN(6); k {
	case 0:
		return v.do(dl.desc("Recv"), dl.limit, nil, func() error {
			var n int
			var err error
			if dl.plain {
				n, err = c.Recv(v.buf)
			} else {
				n, err = c.RecvContext(dl.ctx, v.buf)
			}
			v.checkShort(err, n)
			if err == nil {
				v.checkLen("received message", n, anyMax)
			}
			return err
		})
	case 1:
		return v.do(dl.desc("RecvMsg"), dl.limit, nil, func() error {
			n, urgent, err := c.RecvMsg(dl.ctx, v.buf)
			v.checkShort(err, n)
			if err == nil {
				v.checkLen(fmt.Sprintf("received message (urgent=%v)", urgent), n, v.urgentMax(urgent))
			}
			return err
		})
	case 2, 3:
		var m []byte
		var urgent bool
		desc := dl.desc("Peek")
		err := v.do(desc, dl.limit, nil, func() (err error) {
			switch {
			case k == 3:
				desc = dl.desc("PeekMsg")
				m, urgent, err = c.PeekMsg(dl.ctx)
			case dl.plain:
				m, err = c.Peek()
			default:
				m, err = c.PeekContext(dl.ctx)
			}
			if err == nil {
				v.checkLen(fmt.Sprintf("peeked message (urgent=%v)", urgent), len(m), anyMax)
				if k == 3 {
					v.checkLen(fmt.Sprintf("peeked message (urgent=%v)", urgent), len(m), v.urgentMax(urgent))
				}
				v.touch(m)
			}
			return err
		})
		if err != nil {
			return err
		}
		return v.do("Release() after "+desc, dl.limit, nil, c.Release)
	default:
		limit := v.rng.IntN(17)
		seen := 0
		check := func(m []byte, urgent bool) {
			seen++
			v.checkLen(fmt.Sprintf("message %d of a batch (urgent=%v)", seen, urgent), len(m), v.urgentMax(urgent))
			v.touch(m)
		}
		call := "RecvBatch"
		if k == 5 {
			call = "RecvBatchMsg"
		}
		return v.do(dl.desc(call, limit), dl.limit, nil, func() error {
			var n int
			var err error
			switch {
			case k == 5:
				n, err = c.RecvBatchMsg(dl.ctx, limit, check)
			case dl.plain:
				n, err = c.RecvBatch(limit, func(m []byte) { check(m, false); v.checkLen("batch message", len(m), anyMax) })
			default:
				n, err = c.RecvBatchContext(dl.ctx, limit, func(m []byte) { check(m, false); v.checkLen("batch message", len(m), anyMax) })
			}
			v.checkBatch(call, limit, n, seen)
			return err
		})
	}
}

// checkBatch checks a receive batch's count against what the callback saw.
func (v *scribbleVictim) checkBatch(call string, limit, n, seen int) {
	if (n != seen || limit > 0 && n > limit) && v.bad == "" {
		v.bad = fmt.Sprintf("%s(max %d) returned %d, callback saw %d messages", call, limit, n, seen)
	}
}

func (v *scribbleVictim) stepMPMCProducer(p *MPMCProducer, dl scribbleDeadline) error {
	switch k := v.rng.IntN(10); {
	case k < 4:
		return v.stepSend(p, dl, sendOne)
	case k < 6:
		return v.stepSend(p, dl, sendBatch)
	default:
		return v.stepSend(p, dl, sendReserve)
	}
}

func (v *scribbleVictim) stepMPMCConsumer(c *MPMCConsumer, dl scribbleDeadline) error {
	switch k := v.rng.IntN(3); k {
	case 0:
		return v.do(dl.desc("Recv"), dl.limit, nil, func() error {
			var n int
			var err error
			if dl.plain {
				n, err = c.Recv(v.buf)
			} else {
				n, err = c.RecvContext(dl.ctx, v.buf)
			}
			v.checkShort(err, n)
			if err == nil {
				v.checkLen("received message", n, v.maxData)
			}
			return err
		})
	case 1:
		desc := dl.desc("Peek")
		err := v.do(desc, dl.limit, nil, func() error {
			var m []byte
			var err error
			if dl.plain {
				m, err = c.Peek()
			} else {
				m, err = c.PeekContext(dl.ctx)
			}
			if err == nil {
				v.checkLen("peeked message", len(m), v.maxData)
				v.touch(m)
			}
			return err
		})
		if err != nil {
			return err
		}
		return v.do("Release() after "+desc, dl.limit, nil, c.Release)
	default:
		limit := v.rng.IntN(17)
		seen := 0
		fn := func(m []byte) {
			seen++
			v.checkLen(fmt.Sprintf("message %d of a batch", seen), len(m), v.maxData)
			v.touch(m)
		}
		return v.do(dl.desc("RecvBatch", limit), dl.limit, nil, func() error {
			var n int
			var err error
			if dl.plain {
				n, err = c.RecvBatch(limit, fn)
			} else {
				n, err = c.RecvBatchContext(dl.ctx, limit, fn)
			}
			v.checkBatch("RecvBatch", limit, n, seen)
			return err
		})
	}
}

// finish closes the endpoint while a call waits in it: Close must unblock
// the call and both must return promptly.
func (v *scribbleVictim) finish() {
	if v.ep == nil {
		return
	}
	const wait = 300 * time.Millisecond
	if err := v.ep.SetDeadline(time.Now().Add(wait)); err != nil {
		v.violation(v.calls, "SetDeadline before the last call", err, time.Now(), 0, "unexpected error")
		return
	}
	type result struct {
		desc string
		n    int
		max  int
		err  error
	}
	done := make(chan result, 1)
	buf := make([]byte, len(v.buf))
	go func() {
		var r result
		switch e := v.ep.(type) {
		case *Producer:
			r.desc, r.err = fmt.Sprintf("Send(%d bytes)", v.maxData), e.Send(v.payload[:v.maxData])
		case *Consumer:
			r.desc, r.max = "Recv", max(v.maxData, v.maxUrgent)
			r.n, r.err = e.Recv(buf)
		case *MPMCProducer:
			r.desc, r.err = fmt.Sprintf("Send(%d bytes)", v.maxData), e.Send(v.payload[:v.maxData])
		case *MPMCConsumer:
			r.desc, r.max = "Recv", v.maxData
			r.n, r.err = e.Recv(buf)
		}
		done <- r
	}()
	time.Sleep(time.Duration(v.rng.IntN(20)) * time.Millisecond)
	start := time.Now()
	v.doAs("close", "Close() while a call waits", 2*time.Second, nil, v.ep.Close)
	select {
	case r := <-done:
		desc := r.desc + " with SetDeadline(now+300ms), Close during it"
		if !scribbleErrAllowed(r.err, ErrClosed) {
			v.violation(v.calls, desc, r.err, start, time.Since(start), "unexpected error")
		}
		if r.err == nil && r.max > 0 && r.n > r.max {
			v.violation(v.calls, desc, r.err, start, time.Since(start), fmt.Sprintf("received message is %d bytes, MaxMessage is %d", r.n, r.max))
		}
	case <-time.After(2*time.Second + wait):
		v.violation(v.calls, "the last call", nil, start, time.Since(start), "did not return within 2s of Close")
	}
}

// selftest breaks a promise on purpose, so that TestScribbleDetects can
// show that the checks catch it.
func (v *scribbleVictim) selftest() error {
	switch v.kind {
	case "selftest-fault":
		// One word past the end of the data area, through the mapping.
		d := v.seg.data()
		w := (*atomic.Uint64)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(d)), len(d)))
		fmt.Println("ready")
		fmt.Printf("read %#x past the end\n", w.Load())
	case "selftest-error":
		fmt.Println("ready")
		v.do("Fake()", v.slack, nil, func() error { return io.ErrUnexpectedEOF })
	case "selftest-oversize":
		fmt.Println("ready")
		v.do("Fake()", v.slack, nil, func() error {
			v.checkLen("received message", v.maxData+1, v.maxData)
			return nil
		})
	case "selftest-late":
		fmt.Println("ready")
		v.do("Fake()", v.slack, nil, func() error {
			time.Sleep(v.slack + 10*time.Millisecond)
			return nil
		})
	case "selftest-stuck":
		fmt.Println("ready")
		v.do("Fake()", v.slack, nil, func() error { select {} })
	case "selftest-sleep":
		fmt.Println("ready")
		time.Sleep(time.Hour)
	default:
		return fmt.Errorf("unknown self-test %q", v.kind)
	}
	return nil
}

// The parent: children, their verdicts, and the scribbler.

// scribbleOutput collects a child's output and notices its "ready" line.
type scribbleOutput struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func newScribbleOutput() *scribbleOutput { return &scribbleOutput{ready: make(chan struct{})} }

func (w *scribbleOutput) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if bytes.Contains(w.buf.Bytes(), []byte("ready\n")) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

func (w *scribbleOutput) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// scribbleChild is a victim or peer process.
type scribbleChild struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *scribbleOutput
	start          time.Time
	limit          time.Duration
	killed         atomic.Bool
	done           chan struct{}
	err            error // from Wait, valid after done
	end            time.Time
}

// startScribbleChild starts the scribble-victim helper with the segment at
// fd 3; the child is killed if it still runs limit after it started.
func startScribbleChild(t *testing.T, seg *Segment, name string, limit time.Duration, args ...string) *scribbleChild {
	t.Helper()
	f, err := seg.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &scribbleChild{name: name, stdout: newScribbleOutput(), stderr: newScribbleOutput(), limit: limit, done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
	c.cmd.Env = append(os.Environ(), helperEnv+"="+scribbleRole,
		// The race runtime sleeps a second at exit by default; a round
		// waits for its children.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	for i, a := range args {
		c.cmd.Env = append(c.cmd.Env, "SHMLANE_ARG"+strconv.Itoa(i)+"="+a)
	}
	c.cmd.ExtraFiles = []*os.File{f}
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	c.start = time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(limit, func() {
		c.killed.Store(true)
		c.cmd.Process.Kill()
	})
	go func() {
		c.err = c.cmd.Wait()
		c.end = time.Now()
		timer.Stop()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

func (c *scribbleChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitReady waits for the child's "ready" line, or its end.
func (c *scribbleChild) waitReady(timeout time.Duration) bool {
	select {
	case <-c.stdout.ready:
		return true
	case <-c.done:
		return false
	case <-time.After(timeout):
		return false
	}
}

// verdict is the suite's judgement of a child that has ended: nil if it
// kept every promise, else what went wrong with an excerpt of its stderr.
func (c *scribbleChild) verdict() error {
	<-c.done
	out := c.stderr.String()
	var problems []string
	switch {
	case c.killed.Load():
		problems = append(problems, fmt.Sprintf("still running %v after it started: killed", c.limit))
	case c.err != nil:
		problems = append(problems, fmt.Sprintf("exited with %v after %v", c.err, c.end.Sub(c.start).Round(time.Millisecond)))
	}
	var crash []string
	for _, s := range scribbleFaults {
		if strings.Contains(out, s) {
			crash = append(crash, strconv.Quote(s))
		}
	}
	if crash != nil {
		problems = append(problems, "stderr shows a crash: "+strings.Join(crash, ", "))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s (pid %d): %s; stderr:\n%s", c.name, c.cmd.Process.Pid, strings.Join(problems, "; "), scribbleExcerpt(out))
}

// scribbleExcerpt is the beginning of a child's stderr.
func scribbleExcerpt(s string) string {
	const maxLines, maxBytes = 60, 8 << 10
	cut := false
	// A crash prints the faulting goroutine first: keep its stack, not
	// the others'.
	if i := strings.Index(s, "\ngoroutine "); i >= 0 {
		if j := strings.Index(s[i+1:], "\n\n"); j >= 0 && i+1+j < len(s)-2 {
			s, cut = s[:i+1+j], true
		}
	}
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > maxLines {
		lines, cut = lines[:maxLines], true
	}
	s = strings.Join(lines, "")
	if len(s) > maxBytes {
		s, cut = s[:maxBytes], true
	}
	if s == "" {
		return "\t(empty)"
	}
	s = "\t" + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n\t")
	if cut {
		s += "\n\t..."
	}
	return s
}

// scribbleSummary is the summary line a child prints at its end.
func scribbleSummary(c *scribbleChild) string {
	for _, l := range strings.Split(c.stdout.String(), "\n") {
		if strings.HasPrefix(l, "summary") {
			return l
		}
	}
	return ""
}

var scribbleStamp = regexp.MustCompile(`\[t=(\d+)\]`)

// scribbleSeed is the run's seed: SHMLANE_SCRIBBLE_SEED, or the clock.
func scribbleSeed(t *testing.T) uint64 {
	if s := os.Getenv("SHMLANE_SCRIBBLE_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SHMLANE_SCRIBBLE_SEED=%q: %v", s, err)
		}
		return seed
	}
	return uint64(time.Now().UnixNano())
}

// scribbleDeriveSeed mixes a name and a number into seed (splitmix64 finaliser).
func scribbleDeriveSeed(seed uint64, name string, i int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	z := seed ^ h.Sum64() ^ uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// scribbleDeadPID is a pid no process has: above the kernel's pid_max.
const scribbleDeadPID = 1<<30 - 3

type scribbleRoleSpec struct {
	name   string
	victim string
	peer   string
	mpmc   bool
	lane   bool
}

type scribbleRoundSpec struct {
	capacity int
	victims  int
	wait     string
	dense    bool // scribble in dense bursts, else with longer quiet spells
	// records: scribble record headers and the words around waits
	// (futex, waiting, closed, pid, lane events, MPMC sleepers and
	// tables) but no index or position, so that the endpoints stay
	// usable longer and meet the record paths more often.
	records bool
}

// TestScribble runs every role as a victim of a scribbling peer.
func TestScribble(t *testing.T) {
	seed := scribbleSeed(t)
	t.Logf("seed %d (replay with SHMLANE_SCRIBBLE_SEED=%d)", seed, seed)
	roles := []scribbleRoleSpec{
		{"spsc-producer", "spsc-producer", "spsc-consumer", false, false},
		{"spsc-consumer", "spsc-consumer", "spsc-producer", false, false},
		{"lane-producer", "spsc-producer", "spsc-consumer", false, true},
		{"lane-consumer", "spsc-consumer", "spsc-producer", false, true},
		{"mpmc-producer", "mpmc-producer", "mpmc-consumer", true, false},
		{"mpmc-consumer", "mpmc-consumer", "mpmc-producer", true, false},
	}
	// Many short rounds: a segment scribbled beyond repair stays so, and
	// each round starts from a fresh one.
	dur := 400 * time.Millisecond
	rounds := []scribbleRoundSpec{
		{capacity: 4 << 10, victims: 1, wait: "spin", dense: true},
		{capacity: 4 << 10, victims: 1, wait: "spin", dense: false, records: true},
		{capacity: 64 << 10, victims: 2, wait: "spin", dense: false},
		{capacity: 4 << 10, victims: 1, wait: "sleep", dense: true, records: true},
		{capacity: 4 << 10, victims: 2, wait: "sleep", dense: false},
		{capacity: 64 << 10, victims: 1, wait: "spin", dense: true, records: true},
	}
	if testing.Short() {
		dur, rounds = 250*time.Millisecond, rounds[:2]
	}
	if s := os.Getenv("SHMLANE_SCRIBBLE_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("SHMLANE_SCRIBBLE_ROUNDS=%q: want a positive number", s)
		}
		base := rounds
		rounds = nil
		for i := 0; i < n; i++ {
			rounds = append(rounds, base[i%len(base)])
		}
	}
	for _, role := range roles {
		t.Run(role.name, func(t *testing.T) {
			for i, rd := range rounds {
				if !role.mpmc {
					rd.victims = 1
				}
				runScribbleRound(t, role, rd, i, seed, dur)
			}
		})
	}
}

func runScribbleRound(t *testing.T, role scribbleRoleSpec, rd scribbleRoundSpec, round int, master uint64, dur time.Duration) {
	seed := scribbleDeriveSeed(master, role.name, round)
	cfg := &Config{Capacity: rd.capacity}
	if role.lane {
		cfg.OOBCapacity = 4 << 10
	}
	create := Create
	if role.mpmc {
		create = CreateMPMC
	}
	seg, err := create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	slack := time.Second
	if raceEnabled {
		slack = 2 * time.Second // the race detector slows everything down
	}
	what := fmt.Sprintf("round %d (capacity %d, %d victim(s), %s, %s scribbling of %s; seed %d, round seed %d)",
		round, rd.capacity, rd.victims, rd.wait, map[bool]string{true: "dense", false: "sparse"}[rd.dense],
		map[bool]string{true: "records and wait words", false: "everything"}[rd.records], master, seed)
	limit := dur + 3*slack + time.Second
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	var victims []*scribbleChild
	for j := 0; j < rd.victims; j++ {
		victims = append(victims, startScribbleChild(t, seg, fmt.Sprintf("victim %s #%d", role.victim, j), limit,
			role.victim, ms(dur), strconv.FormatUint(seed+uint64(j)+1, 10), "1", rd.wait, ms(slack)))
	}
	peer := startScribbleChild(t, seg, "peer "+role.peer, limit+300*time.Millisecond,
		role.peer, ms(dur+50*time.Millisecond), strconv.FormatUint(seed+100, 10), "0", rd.wait, ms(slack))
	all := append(append([]*scribbleChild(nil), victims...), peer)
	for _, c := range all {
		c.waitReady(10 * time.Second)
	}
	s := newScribbler(seg, seed, rd.dense, role.mpmc)
	s.records = rd.records
	s.pids = []uint32{uint32(os.Getpid()), 1, scribbleDeadPID, uint32(peer.cmd.Process.Pid)}
	for _, c := range victims {
		s.pids = append(s.pids, uint32(c.cmd.Process.Pid))
	}
	s.run(time.Now().Add(dur), func() bool {
		for _, c := range victims {
			if !c.exited() {
				return false
			}
		}
		return true
	})
	for _, c := range all {
		<-c.done
	}
	t.Logf("%s %s: %d writes", role.name, what, s.writes)
	for _, c := range victims {
		if err := c.verdict(); err != nil {
			t.Errorf("%s %s: %v\n%s", role.name, what, err, s.history(c))
			continue
		}
		if l := scribbleSummary(c); l != "" {
			t.Logf("%s: %s", c.name, l)
		}
	}
	if err := peer.verdict(); err != nil {
		// The peer's role has its own subtest: here it only keeps the
		// victims busy, so its troubles are logged, not failed.
		t.Logf("%s %s: the peer, not under test here, failed too: %v", role.name, what, err)
	} else if l := scribbleSummary(peer); l != "" {
		t.Logf("%s: %s", peer.name, l)
	}
}

// scribbleWrite is one store of the scribbler, kept for failure reports.
type scribbleWrite struct {
	at    int64 // unix nanoseconds
	what  string
	off   int
	val   uint64
	width int
}

// scribbler writes words into a live segment.
type scribbler struct {
	mem     []byte
	geo     layout.Geometry
	mpmc    bool
	dense   bool
	records bool // see scribbleRoundSpec
	rng     *rand.Rand
	// restores are the transient writes of a records round to undo.
	restores []scribbleRestore
	pids     []uint32
	hist     [4096]scribbleWrite
	writes   int
}

func newScribbler(seg *Segment, seed uint64, dense, mpmc bool) *scribbler {
	return &scribbler{mem: seg.mem, geo: seg.geo, mpmc: mpmc, dense: dense, rng: rand.New(rand.NewPCG(seed, 0xbad))}
}

// history lists the scribbler's writes around the victim's broken promise:
// those before the start of the call it names (or before its end, for a
// crash), and, for a call, the first ones during it.
func (s *scribbler) history(c *scribbleChild) string {
	at, call := c.end.UnixNano(), false
	if m := scribbleStamp.FindStringSubmatch(c.stderr.String()); m != nil {
		if ns, err := strconv.ParseInt(m[1], 10, 64); err == nil {
			at, call = ns, true
		}
	}
	const before, during = 20, 8
	first := max(0, s.writes-len(s.hist))
	line := func(w scribbleWrite) string {
		d, rel := time.Duration(at-w.at), "before"
		if d < 0 {
			d, rel = -d, "after"
		}
		return fmt.Sprintf("\t%v %s: %s (offset %d) = %#x (%d bytes)", d.Round(time.Microsecond), rel, w.what, w.off, w.val, w.width)
	}
	var lines []string
	i := s.writes
	for i > first && s.hist[(i-1)%len(s.hist)].at > at {
		i--
	}
	for j := max(first, i-before); j < i; j++ {
		lines = append(lines, line(s.hist[j%len(s.hist)]))
	}
	if call {
		for j := i; j < s.writes && j < i+during; j++ {
			lines = append(lines, line(s.hist[j%len(s.hist)]))
		}
	}
	if len(lines) == 0 {
		return "no scribbler writes before it"
	}
	what := "its end"
	if call {
		what = "the start of that call"
	}
	return fmt.Sprintf("the scribbler's writes around %s:\n%s", what, strings.Join(lines, "\n"))
}

func (s *scribbler) note(what string, off int, val uint64, width int) {
	s.hist[s.writes%len(s.hist)] = scribbleWrite{at: time.Now().UnixNano(), what: what, off: off, val: val, width: width}
	s.writes++
}

func (s *scribbler) load64(off int) uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&s.mem[off])).Load()
}
func (s *scribbler) load32(off int) uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&s.mem[off])).Load()
}

func (s *scribbler) put64(what string, off int, v uint64) {
	old := (*atomic.Uint64)(unsafe.Pointer(&s.mem[off])).Swap(v)
	s.note(what, off, v, 8)
	s.flicker(off, 8, v, old)
}

func (s *scribbler) put32(what string, off int, v uint32) {
	old := (*atomic.Uint32)(unsafe.Pointer(&s.mem[off])).Swap(v)
	s.note(what, off, uint64(v), 4)
	s.flicker(off, 4, uint64(v), uint64(old))
}

// putClosed writes a closed flag; in a records round the write is always
// undone, as a closed flag that stays set stops the traffic for good.
func (s *scribbler) putClosed(what string, off int, v uint32) {
	old := (*atomic.Uint32)(unsafe.Pointer(&s.mem[off])).Swap(v)
	s.note(what, off, uint64(v), 4)
	if s.records && v != old {
		s.restores = append(s.restores, scribbleRestore{at: time.Now().Add(time.Duration(200+s.rng.IntN(4800)) * time.Microsecond), off: off, width: 4, bad: uint64(v), good: uint64(old)})
	}
}

// scribbleRestore puts a word back, unless it changed since.
type scribbleRestore struct {
	at        time.Time
	off       int
	width     int
	bad, good uint64
}

// flicker makes most writes of a records round transient: the word goes
// back to what it was a moment later, unless someone wrote it since. The
// ring heals, its traffic goes on, and the next hostile word meets the
// endpoints in yet another state.
func (s *scribbler) flicker(off, width int, bad, good uint64) {
	if !s.records || bad == good || s.rng.IntN(5) == 0 {
		return
	}
	at := time.Now().Add(time.Duration(200+s.rng.IntN(4800)) * time.Microsecond)
	s.restores = append(s.restores, scribbleRestore{at: at, off: off, width: width, bad: bad, good: good})
}

// heal carries out the restores that are due.
func (s *scribbler) heal() {
	now := time.Now()
	keep := s.restores[:0]
	for _, r := range s.restores {
		if now.Before(r.at) {
			keep = append(keep, r)
			continue
		}
		var ok bool
		if r.width == 8 {
			ok = (*atomic.Uint64)(unsafe.Pointer(&s.mem[r.off])).CompareAndSwap(r.bad, r.good)
		} else {
			ok = (*atomic.Uint32)(unsafe.Pointer(&s.mem[r.off])).CompareAndSwap(uint32(r.bad), uint32(r.good))
		}
		if ok {
			s.note("restore", r.off, r.good, r.width)
		}
	}
	s.restores = keep
}

// pause sleeps for d, carrying out restores on time.
func (s *scribbler) pause(d time.Duration) {
	end := time.Now().Add(d)
	for {
		s.heal()
		now := time.Now()
		if !now.Before(end) {
			return
		}
		next := end
		for _, r := range s.restores {
			if r.at.Before(next) {
				next = r.at
			}
		}
		time.Sleep(next.Sub(now))
	}
}

// run scribbles in bursts until stop or until done reports true.
func (s *scribbler) run(stop time.Time, done func() bool) {
	s.pause(time.Duration(s.rng.IntN(20)) * time.Millisecond) // traffic first
	for time.Now().Before(stop) && !done() {
		burst := 1 + s.rng.IntN(2)
		if s.dense {
			burst = 1 + s.rng.IntN(6)
		}
		for n := burst; n > 0; n-- {
			s.act()
			if s.rng.IntN(3) == 0 {
				s.pause(time.Duration(s.rng.IntN(200)) * time.Microsecond)
			}
		}
		if s.dense {
			s.pause(time.Duration(s.rng.IntN(2000)) * time.Microsecond)
		} else {
			s.pause(time.Duration(2000+s.rng.IntN(28000)) * time.Microsecond)
		}
	}
}

func (s *scribbler) act() {
	k := s.rng.IntN(100)
	if s.records {
		switch {
		case k < 45:
			s.header()
		case k < 75:
			s.combo()
		default:
			s.control()
		}
		return
	}
	switch {
	case k < 25:
		s.position()
	case k < 50:
		s.header()
	case k < 70:
		s.control()
	case k < 85:
		s.anywhere()
	default:
		s.combo()
	}
}

// A position word of the segment and the area it indexes.
type scribblePos struct {
	name     string
	off      int // of the word
	area     int // layout.AreaData or AreaOOB
	otherOff int // a related position (the peer's), for values near it
}

func (s *scribbler) positions() []scribblePos {
	sl := func(slot, word int) int { return layout.SlotOffset(slot) + word }
	if s.mpmc {
		tail, head, reclaim := sl(layout.SlotMPMCTail, 0), sl(layout.SlotMPMCHead, 0), sl(layout.SlotMPMCReclaim, 0)
		return []scribblePos{
			{"MPMC tail", tail, layout.AreaData, head},
			{"MPMC head", head, layout.AreaData, tail},
			{"MPMC reclaim", reclaim, layout.AreaData, head},
		}
	}
	tail, head := sl(layout.SlotProducer, layout.HotPos), sl(layout.SlotConsumer, layout.HotPos)
	ps := []scribblePos{
		{"producer tail (SlotProducer.HotPos)", tail, layout.AreaData, head},
		{"consumer head (SlotConsumer.HotPos)", head, layout.AreaData, tail},
	}
	if s.geo.OOBCapacity != 0 {
		ltail, lhead := sl(layout.SlotOOBProducer, layout.HotPos), sl(layout.SlotOOBConsumer, layout.HotPos)
		ps = append(ps,
			scribblePos{"lane tail (SlotOOBProducer.HotPos)", ltail, layout.AreaOOB, lhead},
			scribblePos{"lane head (SlotOOBConsumer.HotPos)", lhead, layout.AreaOOB, ltail},
			scribblePos{"flush position (SlotOOBFlush.OOBFlushPos)", sl(layout.SlotOOBFlush, layout.OOBFlushPos), layout.AreaData, head},
		)
	}
	return ps
}

func (s *scribbler) pick(ps []scribblePos) scribblePos { return ps[s.rng.IntN(len(ps))] }

// posValue is a hostile value for a position word now at cur, whose peer
// position is other, in an area of the given capacity.
func (s *scribbler) posValue(cur, other, capacity uint64) uint64 {
	lap := cur &^ (capacity - 1)
	switch s.rng.IntN(26) {
	case 0:
		return 0
	case 1:
		return ^uint64(0)
	case 2:
		return 1
	case 3:
		return cur + 1
	case 4:
		return cur - 1
	case 5:
		return cur + 8
	case 6:
		return cur - 8
	case 7:
		return cur + 4
	case 8:
		return cur + capacity
	case 9:
		return cur - capacity
	case 10:
		return lap + capacity - 4
	case 11:
		return lap + capacity - 8
	case 12:
		return capacity - 4
	case 13:
		return capacity - 8
	case 14:
		return capacity
	case 15:
		return other
	case 16:
		return other + capacity
	case 17:
		return other - 8
	case 18:
		return cur | 1<<63
	case 19:
		return cur + 1<<40
	case 20:
		return s.rng.Uint64()
	case 21:
		return cur + uint64(s.rng.IntN(int(capacity)))&^7
	case 22:
		return lap + capacity - 1
	case 23:
		return lap + capacity - 2
	case 24:
		return other + 4
	default:
		return cur + 2*capacity
	}
}

func (s *scribbler) areaOf(a int) (off int, capacity uint64) {
	return int(s.geo.Areas[a].Off), s.geo.Areas[a].Len
}

// wordAt is the offset in the mapping of the word holding position pos
// of area a (the scribbler masks and aligns what it reads).
func (s *scribbler) wordAt(a int, pos uint64) int {
	off, capacity := s.areaOf(a)
	return off + int(pos&(capacity-1)&^7)
}

func (s *scribbler) pid() uint32 {
	if s.rng.IntN(8) == 0 {
		return 0
	}
	return s.pids[s.rng.IntN(len(s.pids))]
}

func (s *scribbler) position() {
	p := s.pick(s.positions())
	_, capacity := s.areaOf(p.area)
	s.put64(p.name, p.off, s.posValue(s.load64(p.off), s.load64(p.otherOff), capacity))
}

// headerValue is a hostile record header for position pos of an area.
func (s *scribbler) headerValue(pos, capacity uint64) uint64 {
	maxMsg := uint64(layout.MaxMessage(capacity))
	off := pos & (capacity - 1)
	switch s.rng.IntN(12) {
	case 0:
		return layout.Free(pos)
	case 1:
		return layout.Free(pos + capacity)
	case 2:
		return ^uint64(0)
	case 3:
		return s.rng.Uint64()
	}
	var n uint64
	switch s.rng.IntN(11) {
	case 0:
		n = 0
	case 1:
		n = 1
	case 2:
		n = uint64(s.rng.IntN(64))
	case 3:
		n = maxMsg
	case 4:
		n = maxMsg + 1
	case 5:
		n = layout.MaxRecordLen
	case 6:
		n = capacity - off - 8 // to the end of the area
	case 7:
		n = capacity - off - 8 + 1 // one byte past it
	case 8:
		n = capacity
	case 9:
		n = maxMsg + 8
	default:
		n = uint64(s.rng.IntN(layout.MaxRecordLen + 1))
	}
	n &= layout.MaxRecordLen
	types := []uint8{layout.TypeData, layout.TypeData, layout.TypePad, layout.TypePad, 0, 9, 0xff}
	if s.mpmc {
		types = append(types, layout.TypeBusy, layout.TypeBusy, layout.TypeReading, layout.TypeDone, layout.TypeDiscard, layout.TypeFree, layout.TypeReclaimed)
	} else {
		types = append(types, layout.TypeBusy, layout.TypeReclaimed)
	}
	typ := types[s.rng.IntN(len(types))]
	if typ == layout.TypeBusy || typ == layout.TypeReading {
		return layout.OwnerHeader(uint32(n), typ, s.pid())
	}
	var tag uint64
	switch s.rng.IntN(8) {
	case 0:
		tag = pos + capacity
	case 1:
		tag = pos - capacity
	case 2:
		tag = pos + 8
	case 3:
		tag = s.rng.Uint64() << 3
	default:
		tag = pos // the right tag
	}
	return n | uint64(typ)<<24 | uint64(layout.Tag(tag))<<32
}

// header writes a hostile header at, or just after, a live position.
func (s *scribbler) header() {
	ps := s.positions()
	if !s.mpmc && len(ps) > 4 {
		ps = ps[:4] // not the flush position
	}
	p := s.pick(ps)
	_, capacity := s.areaOf(p.area)
	pos := s.load64(p.off)
	if k := s.rng.IntN(4); k > 0 {
		pos += uint64(8 * s.rng.IntN(4*k))
	}
	pos &^= 7
	s.put64(fmt.Sprintf("header at %s+%d (position %d)", p.name, pos-s.load64(p.off)&^7, pos), s.wordAt(p.area, pos), s.headerValue(pos, capacity))
}

func (s *scribbler) counter(cur uint64) uint64 {
	switch s.rng.IntN(6) {
	case 0:
		return 0
	case 1:
		return ^uint64(0)
	case 2:
		return cur + 1
	case 3:
		return cur - 1
	case 4:
		return cur + 1<<32
	default:
		return s.rng.Uint64()
	}
}

func (s *scribbler) small32() uint32 {
	return []uint32{0, 0, 1, 1, 2, ^uint32(0), 1 << 31, 32, 33, s.rng.Uint32()}[s.rng.IntN(10)]
}

// slotWord writes one word of a slot, 8 or 4 bytes wide, anywhere in the
// slot: named words and reserved ones alike (a hostile peer does not care
// which are in use). Odd values are frequent, for sequence counters.
func (s *scribbler) slotWord(name string, slot int) {
	base := layout.SlotOffset(slot)
	if s.rng.IntN(3) == 0 {
		off := base + 4*s.rng.IntN(layout.SlotSize/4)
		s.put32(fmt.Sprintf("%s byte %d (u32)", name, off-base), off, s.value32(s.load32(off)))
		return
	}
	off := base + 8*s.rng.IntN(layout.SlotSize/8)
	v := s.counter(s.load64(off))
	if s.rng.IntN(3) == 0 {
		v = s.load64(off) | 1
	}
	s.put64(fmt.Sprintf("%s byte %d", name, off-base), off, v)
}

// value32 is a hostile value for a u32 word now at cur: a futex word, a
// flag, a count, a pid.
func (s *scribbler) value32(cur uint32) uint32 {
	switch s.rng.IntN(4) {
	case 0:
		return s.pid()
	case 1:
		return cur + 1
	default:
		return s.small32()
	}
}

// control writes a futex, waiting, closed, pid, statistics or lane word.
func (s *scribbler) control() {
	sl := layout.SlotOffset
	if s.mpmc {
		k := s.rng.IntN(10)
		if s.records {
			k = s.rng.IntN(8) // not the index slots
		}
		switch {
		case k < 5:
			slot := []int{layout.SlotMPMCConsWait, layout.SlotMPMCProdWait}[s.rng.IntN(2)]
			w := sl(slot)
			name := map[int]string{layout.SlotMPMCConsWait: "SlotMPMCConsWait", layout.SlotMPMCProdWait: "SlotMPMCProdWait"}[slot]
			switch s.rng.IntN(6) {
			case 0:
				s.put32(name+".MPMCWaitSeq", w+layout.MPMCWaitSeq, s.load32(w+layout.MPMCWaitSeq)+1)
			case 1:
				s.put32(name+".MPMCWaitCount", w+layout.MPMCWaitCount, s.small32())
			case 2:
				s.put32(name+".MPMCWaitLive", w+layout.MPMCWaitLive, s.small32())
			case 3:
				s.put32(name+".MPMCWaitJoined", w+layout.MPMCWaitJoined, s.small32())
			case 4:
				s.put64(name+".MPMCWaitDeaths", w+layout.MPMCWaitDeaths, s.counter(s.load64(w+layout.MPMCWaitDeaths)))
			default:
				s.slotWord(name, slot)
			}
		case k < 8:
			slot := []int{layout.SlotMPMCProducers, layout.SlotMPMCConsumers}[s.rng.IntN(2)]
			i := s.rng.IntN(layout.MPMCMaxPeers)
			name := map[int]string{layout.SlotMPMCProducers: "SlotMPMCProducers", layout.SlotMPMCConsumers: "SlotMPMCConsumers"}[slot]
			s.put32(fmt.Sprintf("%s[%d]", name, i), sl(slot)+4*i, s.pid())
		default:
			slot := layout.SlotMPMCFirst + s.rng.IntN(layout.SlotMPMCLast-layout.SlotMPMCFirst+1)
			s.slotWord(fmt.Sprintf("slot %d", slot), slot)
		}
		return
	}
	slots := []int{layout.SlotProducer, layout.SlotConsumer}
	if s.geo.OOBCapacity != 0 {
		slots = append(slots, layout.SlotOOBProducer, layout.SlotOOBConsumer, layout.SlotOOBConsumerWait, layout.SlotOOBFlush, layout.SlotOOBFlush)
	}
	k := s.rng.IntN(10)
	if s.records {
		k = 4 + s.rng.IntN(5) // the control slots only
	}
	switch {
	case k < 4:
		slot := slots[s.rng.IntN(len(slots))]
		s.slotWord(fmt.Sprintf("slot %d", slot), slot)
	case k < 9:
		slot := []int{layout.SlotProducerCtl, layout.SlotConsumerCtl}[s.rng.IntN(2)]
		name := map[int]string{layout.SlotProducerCtl: "SlotProducerCtl", layout.SlotConsumerCtl: "SlotConsumerCtl"}[slot]
		switch s.rng.IntN(4) {
		case 0:
			off := sl(slot) + layout.CtlSeq
			s.put32(name+".CtlSeq", off, s.load32(off)+1+uint32(s.rng.IntN(2))*s.rng.Uint32())
		case 1:
			s.put32(name+".CtlWaiting", sl(slot)+layout.CtlWaiting, s.small32())
		case 2:
			v := uint32(0) // mostly reopen: a closed flag stops the traffic
			if s.rng.IntN(3) == 0 {
				v = s.small32()
			}
			s.putClosed(name+".CtlClosed", sl(slot)+layout.CtlClosed, v)
		default:
			s.put32(name+".CtlPID", sl(slot)+layout.CtlPID, s.pid())
		}
	default:
		s.slotWord("SlotOOBFlush", layout.SlotOOBFlush)
	}
}

// anywhere writes a random word anywhere after the header page.
func (s *scribbler) anywhere() {
	s.anywhereIn(layout.ControlOffset, len(s.mem)-layout.ControlOffset)
}

func (s *scribbler) anywhereIn(from, n int) {
	off := from + s.rng.IntN(n)
	if off > len(s.mem)-8 {
		off = len(s.mem) - 8
	}
	v := []uint64{0, ^uint64(0), 1, s.rng.Uint64(), uint64(s.rng.IntN(1 << 16))}[s.rng.IntN(5)]
	if s.rng.IntN(3) == 0 {
		s.put32("random word", off&^3, uint32(v))
		return
	}
	s.put64("random word", off&^7, v)
}

// combo writes several related words: states a hostile peer can build on
// purpose and that one word at a time reaches only by luck.
func (s *scribbler) combo() {
	sl := layout.SlotOffset
	_, capacity := s.areaOf(layout.AreaData)
	if s.mpmc {
		tailOff, headOff, reclaimOff := sl(layout.SlotMPMCTail), sl(layout.SlotMPMCHead), sl(layout.SlotMPMCReclaim)
		tail, head := s.load64(tailOff), s.load64(headOff)
		k := s.rng.IntN(6)
		for s.records && (k == 2 || k == 5) { // those write indices
			k = s.rng.IntN(6)
		}
		switch k {
		case 0: // a claim in progress at tail by a live process that never finishes
			pid := []uint32{1, uint32(os.Getpid()), s.pids[len(s.pids)-1]}[s.rng.IntN(3)]
			s.put64("combo busy-at-tail: header at tail", s.wordAt(layout.AreaData, tail&^7), layout.OwnerHeader(uint32(s.rng.IntN(64)), layout.TypeBusy, pid))
		case 1: // every producer left, and a claim of impossible length sits at head
			h := head &^ 7
			if tail <= h {
				s.put64("combo busy-at-head: MPMC tail", tailOff, h+64)
			}
			n := []uint32{layout.MaxRecordLen, uint32(capacity), uint32(layout.MaxMessage(capacity) + 9)}[s.rng.IntN(3)]
			s.put64("combo busy-at-head: header at head", s.wordAt(layout.AreaData, h), layout.OwnerHeader(n, layout.TypeBusy, s.pid()))
			w := sl(layout.SlotMPMCProdWait)
			s.put32("combo busy-at-head: producers joined", w+layout.MPMCWaitJoined, 1)
			s.put32("combo busy-at-head: producers live", w+layout.MPMCWaitLive, 0)
		case 2: // an unaligned index near the end of the area
			p := s.pick(s.positions())
			v := s.load64(p.off)&^(capacity-1) + capacity - uint64(1+s.rng.IntN(7))
			s.put64("combo unaligned "+p.name, p.off, v)
		case 3: // a well-formed record at head: the consumers take it
			h := head &^ 7
			n := uint64(s.rng.IntN(layout.MaxMessage(capacity) + 1))
			if h&(capacity-1)+layout.RecordSize(int(n)) > capacity {
				n = 0
			}
			if tail <= h {
				s.put64("combo data-at-head: MPMC tail", tailOff, h+layout.RecordSize(int(n)))
			}
			s.put64("combo data-at-head: header at head", s.wordAt(layout.AreaData, h), layout.EncodeHeader(uint32(n), layout.TypeData, h))
		case 4: // a reader that died at head
			h := head &^ 7
			if tail <= h {
				s.put64("combo dead-reader: MPMC tail", tailOff, h+64)
			}
			s.put64("combo dead-reader: header at head", s.wordAt(layout.AreaData, h), layout.OwnerHeader(uint32(s.rng.IntN(1<<12)), layout.TypeReading, scribbleDeadPID))
		default: // reclaim ahead of head, or a lap behind
			v := []uint64{head + 8, head + capacity, head - capacity - 8, tail + 64}[s.rng.IntN(4)]
			s.put64("combo reclaim: MPMC reclaim", reclaimOff, v)
		}
		return
	}
	tailOff, headOff := sl(layout.SlotProducer)+layout.HotPos, sl(layout.SlotConsumer)+layout.HotPos
	tail, head := s.load64(tailOff), s.load64(headOff)
	lane := s.geo.OOBCapacity != 0
	k := s.rng.IntN(6)
	for s.records && k == 3 { // writes an index
		k = s.rng.IntN(6)
	}
	switch {
	case k == 0: // an odd word in the producer's hot slot (a sequence lock left "being written")
		off := sl(layout.SlotProducer) + 8*(1+s.rng.IntN(layout.SlotSize/8-1))
		s.put64(fmt.Sprintf("combo odd word: SlotProducer byte %d", off-sl(layout.SlotProducer)), off, s.load64(off)|1)
	case k == 1 && lane: // something at the lane's head, without an event
		lh := s.load64(sl(layout.SlotOOBConsumer) + layout.HotPos)
		s.put64("combo lane head: word at lane head", s.wordAt(layout.AreaOOB, lh&^7), []uint64{s.rng.Uint64() | 1, layout.EncodeHeader(8, layout.TypeData, lh+8), layout.EncodeHeader(0, layout.TypePad, lh)}[s.rng.IntN(3)])
	case k == 2 && lane: // a flush written by a hostile producer: position, counters, event
		f := sl(layout.SlotOOBFlush)
		s.put64("combo flush: SlotOOBFlush.OOBFlushPos", f+layout.OOBFlushPos, s.posValue(head, tail, capacity))
		for off := f + 8; off < f+layout.SlotSize; off += 8 {
			if off != f+layout.OOBFlushPos && s.rng.IntN(2) == 0 {
				s.put64(fmt.Sprintf("combo flush: SlotOOBFlush byte %d", off-f), off, s.load64(off)+uint64(1+s.rng.IntN(2)))
			}
		}
		s.put64("combo flush: SlotOOBFlush.OOBEvents", f+layout.OOBEvents, s.load64(f+layout.OOBEvents)+1)
	case k == 3: // unaligned tail or head, read when a side attaches
		v := []uint64{head + 4, tail + 4, tail&^(capacity-1) + capacity - 4, head + capacity - 4}[s.rng.IntN(4)]
		if s.rng.IntN(2) == 0 {
			s.put64("combo unaligned: producer tail", tailOff, v)
		} else {
			s.put64("combo unaligned: consumer head", headOff, v)
		}
	case k == 4: // a padding record at head and a record after it
		h := head &^ 7
		s.put64("combo pad: header at head", s.wordAt(layout.AreaData, h), layout.EncodeHeader(0, layout.TypePad, h))
		next := h&^(capacity-1) + capacity
		s.put64("combo pad: header after the padding", s.wordAt(layout.AreaData, next), s.headerValue(next, capacity))
	default: // a well-formed record at head, not yet published by the producer
		h := head &^ 7
		n := uint64(s.rng.IntN(layout.MaxMessage(capacity) + 1))
		if h&(capacity-1)+layout.RecordSize(int(n)) > capacity {
			n = 0
		}
		s.put64("combo data-at-head: header at head", s.wordAt(layout.AreaData, h), layout.EncodeHeader(uint32(n), layout.TypeData, h))
	}
}

// TestScribbleDetects shows that the suite's checks can fail: children
// that break each promise on purpose are judged by the same code as the
// victims, and a clean run with no scribbling passes.
func TestScribbleDetects(t *testing.T) {
	const slack = 100 * time.Millisecond
	for _, tc := range []struct {
		kind string
		want string // in the verdict
	}{
		{"selftest-fault", "unexpected fault"},
		{"selftest-error", "unexpected error"},
		{"selftest-oversize", "MaxMessage is"},
		{"selftest-late", "late"},
		{"selftest-stuck", "has not returned"},
		{"selftest-sleep", "killed"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			seg, err := Create(&Config{Capacity: 4 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer seg.Close()
			c := startScribbleChild(t, seg, "victim "+tc.kind, 300*time.Millisecond, tc.kind, "0", "1", "1", "spin", strconv.Itoa(int(slack.Milliseconds())))
			err = c.verdict()
			if err == nil {
				t.Fatalf("verdict() = nil for a child that breaks a promise on purpose; stdout:\n%s", scribbleExcerpt(c.stdout.String()))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verdict() = %v\nwant it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("clean", func(t *testing.T) {
		seg, err := Create(&Config{Capacity: 4 << 10, OOBCapacity: 4 << 10})
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		const dur = "200"
		prod := startScribbleChild(t, seg, "victim spsc-producer", 5*time.Second, "spsc-producer", dur, "1", "1", "spin", "1000")
		cons := startScribbleChild(t, seg, "victim spsc-consumer", 5*time.Second, "spsc-consumer", dur, "2", "1", "spin", "1000")
		for _, c := range []*scribbleChild{prod, cons} {
			if err := c.verdict(); err != nil {
				t.Errorf("with no scribbler: %v", err)
			}
			if !strings.Contains(c.stdout.String(), "ok=") {
				t.Errorf("%s made no successful call with no scribbler: %s", c.name, c.stdout.String())
			}
		}
	})
}
